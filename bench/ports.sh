# Sourced by bench/*.sh: free ports and waiting for a started process to
# listen. The sourcing script sets NAME (for messages) first.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() { # PORT PID WHAT LOG
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "$NAME: $3 exited; its log:" >&2; cat "$4" >&2; exit 1; }
    sleep 0.1
  done
  echo "$NAME: $3 did not listen on $1 within 60s" >&2; exit 1
}
