//! Free loopback ports, for the processes the bench and the tests start
//! (a server binds its own listener; a child process can only be told a
//! port).
//!
//! Why all at once: the kernel may hand the same ephemeral port out again as
//! soon as it is released, so ports taken one after another for several
//! servers can collide (two servers told the same port, one failing to
//! bind). Holding every listener until all are bound gives distinct ports.

use std::net::TcpListener;

/// `n` distinct loopback ports that were free a moment ago.
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// One loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    free_ports::<1>().map(|[port]| port)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_taken_together_are_distinct() {
        for _ in 0..50 {
            let ports = super::free_ports::<4>().expect("ports");
            let mut unique = ports.to_vec();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), 4, "{ports:?}");
        }
    }
}
