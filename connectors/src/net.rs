//! Which network addresses a control-plane node may reach on a tenant's
//! behalf. A tenant admin must not be able to make the shared control plane
//! call services inside the cluster's network (SSRF): verification probes
//! and alert webhooks refuse hosts that resolve to loopback, private,
//! link-local, shared, unspecified or multicast addresses unless the
//! operator allowed them (`--alert-private-targets`).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves `host:port` (blocking) and refuses it unless every address is
/// public or `allow_private`. The connection resolves the name again, so a
/// DNS answer that changes in between is not covered; callers that can pin
/// the connection to the checked addresses use [`resolve_public`].
pub fn check_host(host: &str, port: u16, allow_private: bool) -> Result<(), String> {
    resolve_public(host, port, allow_private).map(|_| ())
}

/// Resolves `host:port` (blocking) and returns its addresses if every one
/// is public, for a client to connect to exactly these (no second lookup
/// that a rebinding DNS server could answer differently). With
/// `allow_private` nothing is resolved or refused and the list is empty.
pub fn resolve_public(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    if allow_private {
        return Ok(Vec::new());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve the host: {e}"))?.collect();
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(format!(
            "the host resolves to {}, a non-public address; refused from the control plane (the operator may allow it with --alert-private-targets)",
            a.ip()
        )),
        None if addrs.is_empty() => Err("the host resolves to no address".to_owned()),
        None => Ok(addrs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let err = check_host("127.0.0.1", 80, false).unwrap_err();
        assert!(err.contains("non-public") && err.contains("--alert-private-targets"), "{err}");
        assert!(check_host("127.0.0.1", 80, true).is_ok());
        assert!(resolve_public("[::1]", 80, false).unwrap_err().contains("non-public"));
        assert_eq!(resolve_public("1.1.1.1", 443, false).unwrap(), ["1.1.1.1:443".parse().unwrap()]);
        assert!(resolve_public("127.0.0.1", 80, true).unwrap().is_empty(), "nothing to pin");
    }
}
