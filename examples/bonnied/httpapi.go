package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/httpapi"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// httpConfig holds the flags of the discovery API (package httpapi).
type httpConfig struct {
	addr   string
	tokens string
	cert   string
	key    string
}

func (h *httpConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&h.addr, "http", "", "serve the discovery API (HTTP, JSON; see package httpapi) on this address; "+
		"a bare :PORT or PORT listens on loopback only (give 0.0.0.0:PORT or [::]:PORT for every interface); needs --http-tokens")
	fs.StringVar(&h.tokens, "http-tokens", "", "the API's tokens file, one 'sha256:HEX ROLE PRINCIPAL [expires=TIME]' per line "+
		"(bonnie api token makes them); re-read when it changes")
	fs.StringVar(&h.cert, "http-cert", "", "serve the API over TLS with this certificate chain (PEM; with --http-key)")
	fs.StringVar(&h.key, "http-key", "", "the private key of --http-cert (PEM)")
}

// check refuses an API without tokens: there is no anonymous access.
func (h *httpConfig) check() error {
	switch {
	case h.addr == "" && h.tokens == "" && h.cert == "" && h.key == "":
		return nil
	case h.addr == "":
		return errors.New("--http-tokens, --http-cert and --http-key need --http ADDR")
	case h.tokens == "":
		return errors.New("--http needs --http-tokens FILE: the API has no anonymous access")
	case (h.cert == "") != (h.key == ""):
		return errors.New("give both --http-cert and --http-key, or neither")
	}
	if _, err := listenAddr(h.addr); err != nil {
		return err
	}
	if _, err := httpapi.LoadTokens(h.tokens); err != nil {
		return fmt.Errorf("--http-tokens: %w", err)
	}
	if h.cert != "" {
		if _, err := tls.LoadX509KeyPair(h.cert, h.key); err != nil {
			return fmt.Errorf("--http-cert/--http-key: %w", err)
		}
	}
	return nil
}

// listenAddr completes an address without a host to loopback.
func listenAddr(a string) (string, error) {
	if !strings.Contains(a, ":") {
		a = ":" + a
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", fmt.Errorf("--http: %w", err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// apiServer is the running API; Close stops it (a nil one is off).
type apiServer struct {
	srv  *http.Server
	x    *discovery.Index
	done chan struct{}
}

func (a *apiServer) Close() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
	<-a.done
	a.x.Close()
}

// serveAPI serves the discovery API when --http is given (nil
// otherwise): over its own handle on the discovery index (DATA/discovery.db,
// with the body store for object revisions), caught up from the log
// before every answer whether or not the discovery sink runs, every
// request recorded with the engine. It stops when ctx ends.
func serveAPI(ctx context.Context, c *config, eng *bonnie.Engine, log bonnie.Log, lg *slog.Logger) (*apiServer, error) {
	h := &c.http
	if h.addr == "" {
		return nil, nil
	}
	addr, err := listenAddr(h.addr)
	if err != nil {
		return nil, err
	}
	tokens, err := httpapi.LoadTokens(h.tokens)
	if err != nil {
		return nil, fmt.Errorf("--http-tokens: %w", err)
	}
	blobs, _, err := openBodyStore(c.data, c.sinks.keyFile)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	x, err := discovery.Open(ctx, discovery.Path(c.data), blobs)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	host, _ := os.Hostname()
	alg := lg.With("api", addr)
	api, err := httpapi.New(httpapi.Options{Index: x, Log: log, Recorder: eng, Tokens: tokens, Logger: alg, Host: host})
	if err != nil {
		x.Close()
		return nil, err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 5 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(alg.Handler(), slog.LevelWarn)}
	scheme := "http"
	if h.cert != "" {
		cert, err := tls.LoadX509KeyPair(h.cert, h.key)
		if err != nil {
			x.Close()
			return nil, fmt.Errorf("--http-cert/--http-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("api listener: %w", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() && scheme == "http" {
		lg.Warn("the API listens beyond loopback without TLS: bearer tokens cross the network in clear (give --http-cert and --http-key)", "addr", ln.Addr().String())
	}
	a := &apiServer{srv: srv, x: x, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("api server", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-a.done:
		}
	}()
	lg.Info("api", "url", scheme+"://"+ln.Addr().String()+"/v1/", "tokens", h.tokens, "token_count", tokens.Len())
	return a, nil
}
