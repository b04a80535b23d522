//! The egress proxy's decisions: which names and ports the allowlist admits, and which
//! addresses are never connected to (loopback, private, link-local, cloud metadata and
//! other non-public ranges), except the exact loopback addresses an operator opted in
//! for a local double of the model API.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A request's destination host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// Parses a host as written in a request or a rule (`[v6]` brackets allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        valid.then_some(Host::Name(name))
    }
}

/// Splits `host[:port]` (or `[v6][:port]`), using `default_port` when none is given.
pub fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(Host, u16)> {
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| *p != 0)?,
        None => default_port?,
    };
    Some((Host::parse(&host)?, port))
}

/// Ports a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ports {
    Any,
    One(u16),
    /// A bare host: the web's ports.
    Web,
}

impl Ports {
    fn admits(&self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::One(one) => *one == port,
            Ports::Web => port == 80 || port == 443,
        }
    }
}

/// One allowlist entry: `api.anthropic.com`, `*.npmjs.org`, `host:8443`, `host:*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// Exact name, or the suffix after `*.`.
    host: RuleHost,
    ports: Ports,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RuleHost {
    Exact(Host),
    Subdomains(String),
}

impl AllowRule {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (host, ports) = if let Some(host) = spec.strip_suffix(":*") {
            (host, Ports::Any)
        } else {
            match split_authority(spec, None) {
                Some((_, port)) => (
                    spec.rsplit_once(':').map_or(spec, |(host, _)| host),
                    Ports::One(port),
                ),
                None => (spec, Ports::Web),
            }
        };
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            match Host::parse(suffix) {
                Some(Host::Name(name)) => RuleHost::Subdomains(name),
                _ => return Err(format!("{spec:?}: `*.` must be followed by a domain")),
            }
        } else {
            RuleHost::Exact(
                Host::parse(host).ok_or_else(|| format!("{spec:?} is not a host name"))?,
            )
        };
        Ok(Self { host, ports })
    }

    fn admits(&self, host: &Host, port: u16) -> bool {
        let host_matches = match (&self.host, host) {
            (RuleHost::Exact(rule), host) => rule == host,
            (RuleHost::Subdomains(suffix), Host::Name(name)) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            (RuleHost::Subdomains(_), Host::Ip(_)) => false,
        };
        host_matches && self.ports.admits(port)
    }

    fn literal_ip(&self) -> Option<IpAddr> {
        match &self.host {
            RuleHost::Exact(Host::Ip(ip)) => Some(*ip),
            _ => None,
        }
    }
}

/// The compiled allowlist and exceptions.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    allow: Vec<AllowRule>,
    hosts: BTreeMap<String, Vec<IpAddr>>,
    loopback_exceptions: Vec<SocketAddr>,
}

impl Rules {
    pub fn new(
        allow: &[String],
        hosts: &BTreeMap<String, Vec<IpAddr>>,
        loopback_exceptions: &[SocketAddr],
    ) -> Result<Self, String> {
        let mut rules = Vec::new();
        for spec in allow {
            let rule = AllowRule::parse(spec).map_err(|e| format!("allow: {e}"))?;
            if let Some(ip) = rule.literal_ip()
                && let Some(class) = forbidden_class(ip)
            {
                return Err(format!(
                    "allow: {spec:?} is a {class} address, which the proxy never connects to \
                     (use loopback_exceptions for a local model-API double)"
                ));
            }
            rules.push(rule);
        }
        for address in loopback_exceptions {
            if !address.ip().is_loopback() {
                return Err(format!(
                    "loopback_exceptions: {address} is not a loopback address"
                ));
            }
        }
        let mut names = BTreeMap::new();
        for (name, ips) in hosts {
            match Host::parse(name) {
                Some(Host::Name(name)) => {
                    names.insert(name, ips.clone());
                }
                _ => return Err(format!("hosts: {name:?} is not a host name")),
            }
        }
        Ok(Self {
            allow: rules,
            hosts: names,
            loopback_exceptions: loopback_exceptions.to_vec(),
        })
    }

    /// Whether the allowlist admits `host:port` (before any resolution). An opted-in
    /// loopback address is admitted by its literal too.
    pub fn admits(&self, host: &Host, port: u16) -> bool {
        if let Host::Ip(ip) = host
            && self.is_exception(SocketAddr::new(*ip, port))
        {
            return true;
        }
        self.allow.iter().any(|rule| rule.admits(host, port))
    }

    /// Addresses fixed in the configuration for `name`.
    pub fn static_addresses(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts.get(name).map(Vec::as_slice)
    }

    /// Why `address` may not be connected to, if it may not.
    pub fn refusal(&self, address: SocketAddr) -> Option<&'static str> {
        if self.is_exception(address) {
            return None;
        }
        forbidden_class(address.ip())
    }

    fn is_exception(&self, address: SocketAddr) -> bool {
        self.loopback_exceptions.contains(&address)
    }
}

/// The non-public class of `ip`, if it has one.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (169, 254, _) if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        (169, 254, _) => "link-local",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(class)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let segments = ip.segments();
    let embedded_v4 = |offset: usize| {
        let octets = ip.octets();
        Ipv4Addr::new(
            octets[offset],
            octets[offset + 1],
            octets[offset + 2],
            octets[offset + 3],
        )
    };
    // IPv4-mapped, -compatible and NAT64 addresses carry an IPv4 destination.
    if segments[..6] == [0, 0, 0, 0, 0, 0xffff] {
        return forbidden_v4(embedded_v4(12));
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(12)).or(Some("IPv4-compatible"));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(12));
    }
    if segments[0] == 0x2002 {
        return forbidden_v4(embedded_v4(2));
    }
    match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Some("private (unique local)"),
        s if s & 0xffc0 == 0xfe80 => Some("link-local"),
        s if s & 0xffc0 == 0xfec0 => Some("private (site-local)"),
        s if s & 0xff00 == 0xff00 => Some("multicast"),
        0x2001 if segments[1] == 0x0db8 => Some("documentation"),
        0x2001 if segments[1] == 0 => Some("Teredo tunnel"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Host {
        Host::parse(text).expect("host")
    }

    #[test]
    fn non_public_addresses_are_classified() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("cloud metadata")),
            ("169.254.1.1", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("172.20.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.100.100.200", Some("shared (carrier-grade NAT)")),
            ("0.0.0.0", Some("unspecified")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("cloud metadata")),
            ("64:ff9b::a00:1", Some("private")),
            ("2002:a00:1::", Some("private")),
            ("fd00:ec2::254", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("160.79.104.10", None),
            ("2607:6bc0::10", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (ip, expected) in cases {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(forbidden_class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn allow_rules_match_names_subdomains_and_ports() {
        let exact = AllowRule::parse("api.anthropic.com").expect("rule");
        assert!(exact.admits(&host("api.anthropic.com"), 443));
        assert!(exact.admits(&host("API.Anthropic.com."), 80));
        assert!(!exact.admits(&host("api.anthropic.com"), 22));
        assert!(!exact.admits(&host("evil-api.anthropic.com"), 443));

        let wildcard = AllowRule::parse("*.npmjs.org").expect("rule");
        assert!(wildcard.admits(&host("registry.npmjs.org"), 443));
        assert!(!wildcard.admits(&host("npmjs.org"), 443));
        assert!(!wildcard.admits(&host("evilnpmjs.org"), 443));

        let port = AllowRule::parse("allowed.test:8080").expect("rule");
        assert!(port.admits(&host("allowed.test"), 8080));
        assert!(!port.admits(&host("allowed.test"), 443));
        let any = AllowRule::parse("allowed.test:*").expect("rule");
        assert!(any.admits(&host("allowed.test"), 1));

        assert!(AllowRule::parse("*.").is_err());
        assert!(AllowRule::parse("bad host").is_err());
    }

    #[test]
    fn private_literals_and_non_loopback_exceptions_are_refused_at_start() {
        let none = BTreeMap::new();
        assert!(Rules::new(&["10.0.0.5".into()], &none, &[]).is_err());
        assert!(Rules::new(&[], &none, &["10.0.0.5:80".parse().expect("addr")]).is_err());
        let rules =
            Rules::new(&[], &none, &["127.0.0.1:9000".parse().expect("addr")]).expect("rules");
        assert!(rules.admits(&host("127.0.0.1"), 9000));
        assert!(!rules.admits(&host("127.0.0.1"), 9001));
        assert_eq!(rules.refusal("127.0.0.1:9000".parse().expect("addr")), None);
        assert_eq!(
            rules.refusal("127.0.0.1:9001".parse().expect("addr")),
            Some("loopback")
        );
    }

    #[test]
    fn authorities_split_with_defaults_and_refuse_userinfo() {
        assert_eq!(
            split_authority("example.com", Some(80)),
            Some((host("example.com"), 80))
        );
        assert_eq!(
            split_authority("[::1]:8080", None),
            Some((Host::Ip("::1".parse().expect("ip")), 8080))
        );
        assert_eq!(split_authority("user@example.com:80", None), None);
        assert_eq!(split_authority("example.com:0", None), None);
        assert_eq!(split_authority("example.com", None), None);
    }
}
