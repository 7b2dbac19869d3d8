//! Which addresses webhooks may reach: the table of non-public IPv4 and IPv6 ranges
//! (loopback, private, link-local, CGNAT, unique-local, multicast, broadcast, reserved,
//! benchmarking, documentation, and the IPv6 forms that embed an IPv4 address: mapped,
//! compatible, NAT64, 6to4), and a DNS resolver that drops such addresses so the address
//! checked is the one connected to (DNS rebinding cannot slip a private address in).
//!
//! May depend on: reqwest (its resolver trait), tokio (lookup), std.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How the webhook client treats the network: see `[webhooks]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Send to loopback and private addresses at all.
    pub allow_private: bool,
    /// Keep the response body of a private address in the attempt log.
    pub store_private_responses: bool,
    /// Send through this HTTP(S) proxy instead of connecting directly; never taken from
    /// the environment (`HTTP_PROXY` and friends are ignored).
    pub proxy: Option<String>,
}

/// True for every address that is not a public unicast one: loopback, unspecified, private,
/// link-local, CGNAT, unique-local, multicast, broadcast, reserved, benchmarking and
/// documentation ranges, and IPv6 addresses embedding such an IPv4 address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // 0.0.0.0/8 "this network"
        || a == 10 // 10.0.0.0/8 private
        || a == 127 // 127.0.0.0/8 loopback
        || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || (a == 169 && b == 254) // 169.254.0.0/16 link-local (cloud metadata)
        || (a == 172 && (b & 0xf0) == 16) // 172.16.0.0/12 private
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // 192.0.2.0/24 documentation
        || (a == 192 && b == 88 && c == 99) // 192.88.99.0/24 6to4 relay anycast
        || (a == 192 && b == 168) // 192.168.0.0/16 private
        || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || (a == 198 && b == 51 && c == 100) // 198.51.100.0/24 documentation
        || (a == 203 && b == 0 && c == 113) // 203.0.113.0/24 documentation
        || a >= 224 // 224.0.0.0/4 multicast, 240.0.0.0/4 reserved, 255.255.255.255 broadcast
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        is_private_v4(Ipv4Addr::new(a, b, c, d))
    };
    if s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff) {
        // ::/96 (unspecified, loopback, IPv4-compatible: deprecated, never a webhook target)
        // and ::ffff:0:0/96 (IPv4-mapped: as private as the IPv4 address it carries).
        return s[5] == 0 || embedded(s[6], s[7]);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // 64:ff9b::/96 NAT64: the IPv4 address it translates to.
        return embedded(s[6], s[7]);
    }
    if s[0] == 0x2002 {
        // 2002::/16 6to4: the IPv4 address of the tunnel end.
        return embedded(s[1], s[2]);
    }
    (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48 local-use NAT64
        || (s[0] == 0x100 && s[1..4] == [0; 3]) // 100::/64 discard-only
        || (s[0] == 0x2001 && s[1] < 0x200) // 2001::/23 IETF protocol assignments (Teredo…)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // 2001:db8::/32 documentation
        || (s[0] & 0xfff0) == 0x3ff0 // 3fff::/20 documentation
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique-local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // ff00::/8 multicast
}

/// DNS resolution that drops private addresses: the connection can only go to what is left.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    "the host resolves only to private-network addresses, which are not allowed"
                        .into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range: `(address, private?, what)`.
    const TABLE: &[(&str, bool, &str)] = &[
        ("0.0.0.0", true, "unspecified"),
        ("0.1.2.3", true, "0.0.0.0/8"),
        ("10.1.2.3", true, "10/8"),
        ("100.64.0.1", true, "CGNAT low"),
        ("100.127.255.254", true, "CGNAT high"),
        ("100.128.0.1", false, "just above CGNAT"),
        ("100.63.255.255", false, "just below CGNAT"),
        ("127.0.0.1", true, "loopback"),
        ("127.255.255.254", true, "loopback /8"),
        ("169.254.169.254", true, "link-local metadata"),
        ("172.16.0.1", true, "172.16/12 low"),
        ("172.31.255.254", true, "172.16/12 high"),
        ("172.32.0.1", false, "above 172.16/12"),
        ("192.0.0.8", true, "192.0.0/24"),
        ("192.0.2.1", true, "TEST-NET-1"),
        ("192.88.99.1", true, "6to4 relay anycast"),
        ("192.168.1.1", true, "192.168/16"),
        ("198.18.0.1", true, "benchmarking low"),
        ("198.19.255.254", true, "benchmarking high"),
        ("198.20.0.1", false, "above benchmarking"),
        ("198.51.100.7", true, "TEST-NET-2"),
        ("203.0.113.9", true, "TEST-NET-3"),
        ("224.0.0.1", true, "multicast"),
        ("239.255.255.250", true, "multicast SSDP"),
        ("240.0.0.1", true, "240/4 reserved"),
        ("255.255.255.255", true, "broadcast"),
        ("8.8.8.8", false, "public v4"),
        ("1.1.1.1", false, "public v4"),
        ("223.255.255.254", false, "last public before multicast"),
        ("::", true, "v6 unspecified"),
        ("::1", true, "v6 loopback"),
        ("::7f00:1", true, "IPv4-compatible loopback"),
        (
            "::808:808",
            true,
            "IPv4-compatible (deprecated) even when public",
        ),
        ("::ffff:10.0.0.1", true, "IPv4-mapped private"),
        ("::ffff:127.0.0.1", true, "IPv4-mapped loopback"),
        ("::ffff:169.254.169.254", true, "IPv4-mapped metadata"),
        ("::ffff:8.8.8.8", false, "IPv4-mapped public"),
        ("64:ff9b::7f00:1", true, "NAT64 loopback"),
        ("64:ff9b::a00:1", true, "NAT64 10/8"),
        ("64:ff9b::a9fe:a9fe", true, "NAT64 metadata"),
        ("64:ff9b::808:808", false, "NAT64 public"),
        ("64:ff9b:1::1", true, "local-use NAT64"),
        ("2002:7f00:1::1", true, "6to4 of loopback"),
        ("2002:c0a8:101::1", true, "6to4 of 192.168.1.1"),
        ("2002:a9fe:a9fe::1", true, "6to4 of metadata"),
        ("2002:808:808::1", false, "6to4 of a public address"),
        ("100::1", true, "discard-only"),
        ("2001::1", true, "Teredo"),
        ("2001:db8::1", true, "v6 documentation"),
        ("3fff::1", true, "v6 documentation 3fff::/20"),
        ("fc00::1", true, "ULA fc"),
        ("fd00::1", true, "ULA fd"),
        ("fe80::1", true, "v6 link-local"),
        ("fec0::1", true, "site-local"),
        ("ff02::1", true, "v6 multicast"),
        ("2001:4860:4860::8888", false, "public v6"),
        ("2606:4700:4700::1111", false, "public v6"),
    ];

    #[test]
    fn every_range_is_classified() {
        for (text, private, what) in TABLE {
            let ip: IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(is_private(ip), *private, "{text} ({what})");
        }
    }
}
