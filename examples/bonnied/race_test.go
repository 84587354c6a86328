//go:build race

package main

// raceEnabled makes TestMain build bonnied with the race detector too.
const raceEnabled = true
