//! Name resolution that refuses special addresses: an allow-listed host name whose DNS answer
//! points at loopback, a private network, link-local (cloud metadata), shared address space or
//! any other special range is not connected to, unless the connection allows private hosts.
//! The check is made on the addresses the connection will use, so a name that resolves to a
//! public address at configuration time and to 169.254.169.254 later is refused later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a name was not connected to.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} resolves to {address}, a loopback, private or otherwise special address the connection may not reach"
)]
pub struct Refused {
    name: String,
    address: IpAddr,
}

/// The resolver of one egress client: `public` refuses special addresses.
#[derive(Debug)]
pub struct Guarded {
    pub public: bool,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let public = self.public;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if public && let Some(special) = addresses.iter().find(|a| is_special_address(a.ip())) {
                return Err(Box::new(Refused {
                    name: host,
                    address: special.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is anything but a public unicast address: unspecified, loopback, private
/// (RFC 1918, unique local), link-local, shared address space (RFC 6598), benchmarking,
/// documentation, multicast, broadcast or reserved; IPv4-mapped and IPv4-compatible IPv6
/// addresses are judged as the IPv4 address they carry.
pub fn is_special_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_special_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| compatible_v4(v6)) {
            Some(v4) => is_special_v4(v4),
            None => is_special_v6(v6),
        },
    }
}

fn compatible_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1))
        .then(|| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
}

fn is_special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_special_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x0100 && ip.segments()[1..4] == [0, 0, 0] // discard-only
        || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (may reach private v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_recognised() {
        for special in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(is_special_address(special.parse().unwrap()), "{special}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "93.184.216.34",
        ] {
            assert!(!is_special_address(public.parse().unwrap()), "{public}");
        }
    }
}
