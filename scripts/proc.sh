#!/usr/bin/env bash
# Process and port helpers the service scripts share (sourced by moto.sh and databases.sh).

# A free TCP port on 127.0.0.1 (bound, read, released: the caller retries if it is taken meanwhile).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# True while process $1 runs (an exited child that is not yet reaped is a zombie: not running).
pid_running() {
    local stat state
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    state="${stat##*) }"
    state="${state%% *}"
    [ "$state" != Z ] && [ "$state" != X ]
}
