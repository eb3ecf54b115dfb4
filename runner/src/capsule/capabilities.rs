//! What a capsule may ask for beyond compute: file paths, egress
//! destinations and config keys, and the patterns a trust root uses to bound them.
//!
//! Every value has one textual form, checked on parse, so a signed manifest
//! has exactly one encoding and a ceiling check is a plain comparison.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// How a path may be used. `ReadOnly < ReadWrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read files and list directories.
    ReadOnly,
    /// Also create, write and remove.
    ReadWrite,
}

impl Access {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        }
    }

    /// Parses `read-only` or `read-write`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read-only" => Some(Access::ReadOnly),
            "read-write" => Some(Access::ReadWrite),
            _ => None,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest path accepted.
pub const MAX_PATH_BYTES: usize = 4096;

/// An absolute, normalised path: starts with `/`, no empty, `.` or `..`
/// components, no trailing `/` (except `/` itself), no NUL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbsPath(String);

impl AbsPath {
    /// Checks `text` is an absolute normalised path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "path `{}` {why}; write an absolute path such as /var/log/app",
                text.escape_debug()
            ))
        };
        if !text.starts_with('/') {
            return bad("is not absolute");
        }
        if text.len() > MAX_PATH_BYTES {
            return bad("is too long");
        }
        if text.contains('\0') {
            return bad("contains NUL");
        }
        if text != "/" {
            for component in text[1..].split('/') {
                match component {
                    "" => return bad("has an empty component or a trailing `/`"),
                    "." | ".." => return bad("has a `.` or `..` component"),
                    _ => {}
                }
            }
        }
        Ok(Self(text.to_string()))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `other` or lies beneath it, component by component.
    pub fn is_within(&self, other: &AbsPath) -> bool {
        other.0 == "/"
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path and how it may be used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileAccess {
    /// The path (in a manifest: the host path, mounted at the same path in the guest).
    pub path: AbsPath,
    /// Read-only or read-write.
    pub access: Access,
}

/// `{ path = "...", access = "..." }` as written in a manifest or ceiling, before it is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessSource {
    /// The path as written.
    pub path: String,
    /// The access asked for or allowed.
    pub access: Access,
}

impl FileAccessSource {
    /// Checks the path (see [`AbsPath::parse`]).
    pub fn check(&self) -> Result<FileAccess, String> {
        Ok(FileAccess {
            path: AbsPath::parse(&self.path)?,
            access: self.access,
        })
    }
}

impl fmt::Display for FileAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.access)
    }
}

/// A host as a destination names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    /// A lowercase DNS name, without trailing dot.
    Name(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    V6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

fn parse_host(text: &str, whole: &str) -> Result<Host, String> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let addr: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("destination `{whole}`: `{inner}` is not an IPv6 address"))?;
        if addr.to_string() != inner {
            return Err(format!(
                "destination `{whole}`: write the IPv6 address as `[{addr}]`"
            ));
        }
        return Ok(Host::V6(addr));
    }
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Ok(Host::V4(addr));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if text.is_empty() || text.len() > 253 || !text.split('.').all(label_ok) {
        return Err(format!(
            "destination `{whole}`: `{text}` is not a lowercase DNS name or IP address"
        ));
    }
    if text
        .split('.')
        .next_back()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "destination `{whole}`: `{text}` looks like a malformed IPv4 address"
        ));
    }
    Ok(Host::Name(text.to_string()))
}

fn split_port(text: &str) -> Result<(&str, &str), String> {
    text.rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| {
            format!("destination `{text}` must be `host:port`, e.g. `api.example.com:443`")
        })
}

fn parse_port(text: &str, whole: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p != 0 && p.to_string() == text => Ok(p),
        _ => Err(format!(
            "destination `{whole}`: port `{text}` must be a number from 1 to 65535"
        )),
    }
}

/// The protocol an egress entry is for. No scheme means any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// Raw TCP connections (`wasi:sockets`).
    Tcp,
    /// Plain HTTP requests (`wasi:http`).
    Http,
    /// HTTPS requests (`wasi:http`, TLS by host name).
    Https,
}

impl Scheme {
    /// `tcp`, `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Splits an optional `scheme://` prefix off `text`.
fn split_scheme(text: &str) -> Result<(Option<Scheme>, &str), String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok((None, text));
    };
    let scheme = match scheme {
        "tcp" => Scheme::Tcp,
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "destination `{text}`: scheme `{other}` is not tcp, http or https"
            ));
        }
    };
    Ok((Some(scheme), rest))
}

/// An egress destination a capsule asks for: `[scheme://]host:port`, exactly
/// one host and port; without a scheme it covers raw TCP and HTTP(S) alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    scheme: Option<Scheme>,
    host: Host,
    port: u16,
}

impl Destination {
    /// Parses `[scheme://]host:port`: `tcp`, `http` or `https`; a lowercase
    /// DNS name, IPv4 address or `[IPv6]`; and a port.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = split_scheme(text)?;
        let (host, port) = split_port(rest)?;
        let d = Self {
            scheme,
            host: parse_host(host, text)?,
            port: parse_port(port, text)?,
        };
        Ok(d)
    }

    /// The scheme, if one was given.
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// `host:port`, without the scheme.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// True when raw TCP connections are covered (no scheme, or `tcp`).
    pub fn allows_tcp(&self) -> bool {
        matches!(self.scheme, None | Some(Scheme::Tcp))
    }

    /// True when HTTP requests (`https` when `tls`) are covered.
    pub fn allows_http(&self, tls: bool) -> bool {
        match self.scheme {
            None => true,
            Some(Scheme::Http) => !tls,
            Some(Scheme::Https) => tls,
            Some(Scheme::Tcp) => false,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as written (IPv6 in brackets).
    pub fn host(&self) -> String {
        self.host.to_string()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{}://", s.as_str())?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A set of destinations in a trust root's ceiling or a site policy:
/// `[scheme://]host:port`, where the host may be `*.suffix` (any name strictly
/// beneath `suffix`) and the port may be `*`. Without a scheme it covers
/// destinations of every scheme; with one, only destinations of that scheme.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestinationPattern {
    scheme: Option<Scheme>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum HostPattern {
    Exact(Host),
    Beneath(String),
}

impl DestinationPattern {
    /// Parses a pattern; see the type's documentation.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = split_scheme(text)?;
        let (host, port) = split_port(rest)?;
        let port = if port == "*" {
            None
        } else {
            Some(parse_port(port, text)?)
        };
        let host = match host.strip_prefix("*.") {
            Some(suffix) => match parse_host(suffix, text)? {
                Host::Name(n) => HostPattern::Beneath(n),
                _ => {
                    return Err(format!(
                        "destination pattern `{text}`: `*.` applies to DNS names, not addresses"
                    ));
                }
            },
            None => HostPattern::Exact(parse_host(host, text)?),
        };
        Ok(Self { scheme, host, port })
    }

    /// True when the pattern names one host and one port (no `*`).
    pub fn is_exact(&self) -> bool {
        matches!(self.host, HostPattern::Exact(_)) && self.port.is_some()
    }

    /// True when `dest` is in this set.
    pub fn covers(&self, dest: &Destination) -> bool {
        let host_ok = match (&self.host, &dest.host) {
            (HostPattern::Exact(h), d) => h == d,
            (HostPattern::Beneath(suffix), Host::Name(n)) => n
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (HostPattern::Beneath(_), _) => false,
        };
        // A pattern without a scheme covers every scheme; one with a scheme only that scheme.
        let scheme_ok = self.scheme.is_none() || self.scheme == dest.scheme;
        scheme_ok && host_ok && self.port.is_none_or(|p| p == dest.port)
    }
}

impl fmt::Display for DestinationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{}://", s.as_str())?;
        }
        match &self.host {
            HostPattern::Exact(h) => write!(f, "{h}")?,
            HostPattern::Beneath(s) => write!(f, "*.{s}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

/// Checks a config key: 1-128 of lowercase letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn validate_config_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "config key `{}` is invalid: use 1-128 lowercase letters, digits, `.`, `_`, `-`, starting with a letter or digit",
            key.escape_debug()
        ))
    }
}

/// Whether `name` is 1-64 lowercase letters, digits and `-`, not starting with
/// `-`: the rule for capsule and site names, which also makes them safe file names.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a capsule name: 1-64 lowercase letters, digits and `-`, not starting with `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "capsule name `{}` is invalid: use 1-64 lowercase letters, digits and `-`, not starting with `-`",
            name.escape_debug()
        ))
    }
}

/// Checks a site name (this site's, or one audience entry): the same rules as
/// a capsule name. `*` is not a site name; audiences accept it on their own.
pub fn validate_site(site: &str) -> Result<(), String> {
    if site == ANY_SITE {
        return Err(
            "site `*` is not a site name: `*` in an audience means every site, but this site needs its own name (1-64 lowercase letters, digits and `-`)"
                .into(),
        );
    }
    if is_plain_name(site) {
        Ok(())
    } else {
        Err(format!(
            "site `{}` is invalid: use 1-64 lowercase letters, digits and `-`, not starting with `-`",
            site.escape_debug()
        ))
    }
}

/// The audience entry meaning "every site".
pub const ANY_SITE: &str = "*";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        for good in ["/", "/var", "/var/log/app", "/a b/c"] {
            AbsPath::parse(good).unwrap();
        }
        for bad in [
            "",
            "var",
            "/var/",
            "/var//log",
            "/var/./log",
            "/var/../etc",
            "/a\0b",
        ] {
            assert!(AbsPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let p = |s| AbsPath::parse(s).unwrap();
        assert!(p("/var/log/app").is_within(&p("/var/log")));
        assert!(p("/var/log").is_within(&p("/var/log")));
        assert!(p("/var/log").is_within(&p("/")));
        assert!(!p("/var/logs").is_within(&p("/var/log")));
        assert!(!p("/var").is_within(&p("/var/log")));
    }

    #[test]
    fn destinations_have_one_form() {
        for good in [
            "api.example.com:443",
            "10.0.0.5:5432",
            "[::1]:8080",
            "localhost:80",
        ] {
            assert_eq!(Destination::parse(good).unwrap().to_string(), good);
        }
        for bad in [
            "API.example.com:443",
            "api.example.com",
            "api.example.com:0",
            "api.example.com:0443",
            "api.example.com:65536",
            ":443",
            "[0:0::1]:80",
            "*.example.com:443",
            "10.0.0.256:80",
            "-a.example:1",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns_cover_what_they_say() {
        let d = |s| Destination::parse(s).unwrap();
        let p = |s| DestinationPattern::parse(s).unwrap();
        assert!(p("*.example.com:443").covers(&d("api.example.com:443")));
        assert!(p("*.example.com:443").covers(&d("a.b.example.com:443")));
        assert!(!p("*.example.com:443").covers(&d("example.com:443")));
        assert!(!p("*.example.com:443").covers(&d("badexample.com:443")));
        assert!(!p("*.example.com:443").covers(&d("api.example.com:80")));
        assert!(p("db.internal:*").covers(&d("db.internal:5432")));
        assert!(p("10.0.0.5:5432").covers(&d("10.0.0.5:5432")));
        assert!(!p("10.0.0.5:5432").covers(&d("10.0.0.6:5432")));
        assert!(DestinationPattern::parse("*.10.0.0.1:80").is_err());
        assert_eq!(p("*.example.com:*").to_string(), "*.example.com:*");
        // Schemes: a pattern with one covers only that scheme; one without covers all.
        assert!(p("https://*.example.com:443").covers(&d("https://api.example.com:443")));
        assert!(!p("https://*.example.com:443").covers(&d("http://api.example.com:443")));
        assert!(!p("https://*.example.com:443").covers(&d("api.example.com:443")));
        assert!(p("*.example.com:443").covers(&d("tcp://api.example.com:443")));
        assert!(DestinationPattern::parse("ftp://x.example:21").is_err());
    }

    #[test]
    fn schemes_decide_the_protocol() {
        let d = |s| Destination::parse(s).unwrap();
        assert!(d("db.internal:5432").allows_tcp() && d("db.internal:5432").allows_http(true));
        assert!(d("tcp://db.internal:5432").allows_tcp());
        assert!(!d("tcp://db.internal:5432").allows_http(false));
        assert!(d("https://a.example:443").allows_http(true));
        assert!(!d("https://a.example:443").allows_http(false));
        assert!(!d("https://a.example:443").allows_tcp());
        assert_eq!(d("https://a.example:443").authority(), "a.example:443");
        assert_eq!(
            d("https://a.example:443").to_string(),
            "https://a.example:443"
        );
    }

    #[test]
    fn config_keys_and_sites() {
        validate_config_key("target-url").unwrap();
        validate_config_key("db.read_replica").unwrap();
        assert!(validate_config_key("Target").is_err());
        assert!(validate_config_key(".x").is_err());
        validate_site("plant-7").unwrap();
        assert!(validate_site("*").is_err());
        assert!(validate_site("Plant").is_err());
    }
}
