//! Free loopback ports, for the processes the bench and the tests start
//! (a server binds its own listener; a child process can only be told a
//! port).
//!
//! Why not port 0 and release: the kernel hands out a released ephemeral
//! port again (to another port-0 bind, or as the source port of any
//! outgoing connection), so a port learnt that way and bound later by a
//! child can already be someone else's: two servers told the same port, or
//! a client reaching the wrong one. Ports here come from below the kernel's
//! ephemeral range (which neither port-0 binds nor outgoing connections
//! use), each process starts at its own offset in it, never hands out the
//! same port twice, and checks each is free when it hands it out.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// The range handed out from: below Linux's default ephemeral range
/// (32768-60999) and above the well-known and most registered ports.
const RANGE: std::ops::Range<u16> = 20_000..32_700;

struct Handed {
    next: u16,
    given: HashSet<u16>,
}

static HANDED: Mutex<Option<Handed>> = Mutex::new(None);

/// `n` distinct loopback ports that were free a moment ago, never handed
/// out before by this process.
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let mut handed = HANDED.lock().unwrap_or_else(PoisonError::into_inner);
    let handed = handed.get_or_insert_with(|| {
        let span = u32::from(RANGE.end - RANGE.start);
        let offset = (std::process::id().wrapping_mul(7919)) % span;
        Handed {
            next: RANGE.start + u16::try_from(offset).unwrap_or(0),
            given: HashSet::new(),
        }
    });
    let mut ports = [0; N];
    let mut held = Vec::with_capacity(N);
    let mut tried = 0;
    for port in &mut ports {
        loop {
            tried += 1;
            if tried > usize::from(RANGE.end - RANGE.start) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "no free port left in the range",
                ));
            }
            let candidate = handed.next;
            handed.next = if candidate + 1 >= RANGE.end {
                RANGE.start
            } else {
                candidate + 1
            };
            if handed.given.contains(&candidate) {
                continue;
            }
            // Held until every port is chosen, so the N are distinct even
            // against other processes choosing at the same moment.
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate)) {
                handed.given.insert(candidate);
                held.push(listener);
                *port = candidate;
                break;
            }
        }
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
    fn a_port_is_never_handed_out_twice_and_is_below_the_ephemeral_range() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let [port] = super::free_ports::<1>().expect("port");
            assert!(super::RANGE.contains(&port), "{port}");
            assert!(seen.insert(port), "{port} handed out twice");
        }
    }

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
