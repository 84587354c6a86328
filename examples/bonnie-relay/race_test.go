//go:build race

package main

// raceEnabled makes TestMain build the relay with the race detector too.
const raceEnabled = true
