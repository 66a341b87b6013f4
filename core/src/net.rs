//! CIDR parsing and matching for per-tenant IP allowlists.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the same host as
//! `a.b.c.d`: they are normalised to IPv4 before matching, so they neither
//! slip past an IPv4 list nor get refused by one that allows them.

use crate::error::DomainError;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl Cidr {
    /// Parse `addr/prefix` or a bare address (a host route). Accepts
    /// Postgres's cidr output format.
    pub fn parse(s: &str) -> Result<Cidr, DomainError> {
        let bad = || {
            DomainError::Policy(format!(
                "invalid CIDR \"{}\"",
                crate::keyring::truncate(s, 64)
            ))
        };
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        // A mapped IPv6 network becomes the IPv4 network it denotes.
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                if prefix >= 96 {
                    return Ok(Cidr {
                        addr: IpAddr::V4(v4),
                        prefix: prefix - 96,
                    });
                }
            }
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                (u32::from(net) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                (u128::from(net) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_and_v6() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.200.1.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        let n6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(n6.contains(ip("2001:db8:ffff::1")));
        assert!(!n6.contains(ip("2001:db9::1")));
        assert!(!n6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn mapped_addresses_are_their_ipv4() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!(!n.contains(ip("::ffff:192.168.1.1")));
        // A v6 list does not admit a mapped v4 address by accident.
        assert!(!Cidr::parse("::/0")
            .unwrap()
            .contains(ip("::ffff:192.168.1.1")));
        assert!(Cidr::parse("::ffff:10.0.0.0/104")
            .unwrap()
            .contains(ip("10.9.9.9")));
    }

    #[test]
    fn host_routes_and_errors() {
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        for bad in ["10.0.0.0/33", "x/8", "", "::/129", "1.2.3.4/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
