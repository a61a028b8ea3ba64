//! A request path made canonical before routing, as Envoy's HTTP connection manager makes it:
//! `normalize_path` (RFC 3986 dot segments and percent-encoded unreserved characters, the way
//! Envoy's URL canonicalizer does it) and `path_with_escaped_slashes_action` (`%2F`, `%5C`).
//! Pure functions over the path (without its query).

/// `normalize_path`'s failure: the path holds `%00` (Envoy answers 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// `path` made canonical: `\` becomes `/`; `%XX` of an unreserved character (letter, digit,
/// `-`, `.`, `_`, `~`) is decoded, other escapes are kept as written; characters a URL may not
/// hold raw (`"`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `^`, controls, non-ASCII) are escaped; then
/// `.` and `..` segments are resolved (never above the root). `Ok(None)`: unchanged.
pub fn normalize(path: &str) -> Result<Option<String>, Invalid> {
    if !path.starts_with('/') {
        return Ok(None);
    }
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => match (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                (Some(h), Some(l)) => {
                    let v = h * 16 + l;
                    if v == 0 {
                        return Err(Invalid);
                    }
                    if is_unreserved(v) {
                        decoded.push(char::from(v));
                    } else {
                        decoded.push_str(&path[i..i + 3]);
                    }
                    i += 3;
                    continue;
                }
                _ => decoded.push('%'),
            },
            b'\\' => decoded.push('/'),
            c if must_escape(c) => {
                decoded.push('%');
                decoded.push(char::from(HEX[usize::from(c >> 4)]));
                decoded.push(char::from(HEX[usize::from(c & 15)]));
            }
            c => decoded.push(char::from(c)),
        }
        i += 1;
    }
    let resolved = remove_dot_segments(&decoded);
    Ok((resolved != path).then_some(resolved))
}

/// `path` with `%2F`/`%2f` made `/` and `%5C`/`%5c` made `\`; `None` when it has none.
pub fn unescape_slashes(path: &str) -> Option<String> {
    if !has_escaped_slash(path) {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let esc = rest.get(at..at + 3).unwrap_or("");
        if esc.eq_ignore_ascii_case("%2f") {
            out.push('/');
            rest = &rest[at + 3..];
        } else if esc.eq_ignore_ascii_case("%5c") {
            out.push('\\');
            rest = &rest[at + 3..];
        } else {
            out.push('%');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Whether `path` holds an escaped `/` or `\`.
pub fn has_escaped_slash(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
    })
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn must_escape(c: u8) -> bool {
    c <= b' ' || c >= 0x7f || matches!(c, b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^')
}

/// RFC 3986 section 5.2.4 over an absolute path: a trailing `.` or `..` leaves a trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    let mut r = String::with_capacity(path.len());
    for s in &out {
        r.push('/');
        r.push_str(s);
    }
    if r.is_empty() {
        r.push('/');
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Envoy 1.40 forwarded with `normalize_path: true` (`None`: unchanged).
    #[test]
    fn normalizes_as_envoy() {
        let cases = [
            ("/a/./b", Some("/a/b")),
            ("/a/../b", Some("/b")),
            ("/../x", Some("/x")),
            ("/a/b/..", Some("/a/")),
            ("/a/b/.", Some("/a/b/")),
            ("/%41%7e%2D%5F%2e", Some("/A~-_.")),
            ("/a%2Fb", None),
            ("/a%2fb", None),
            ("/a%5Cb", None),
            ("/a\\b", Some("/a/b")),
            ("/a//b", None),
            ("/a%20b", None),
            ("/a/%2e%2e/b", Some("/b")),
            ("/%zz", None),
            ("/a%c3%a9", None),
            ("/a%3Ab", None),
            ("/a;b", None),
            ("/a/b/../../../c", Some("/c")),
            ("/a%2F..%2Fb", None),
            ("/.%2e/x", Some("/x")),
            ("/a/.b/..c/", None),
            ("/a%2e/b", Some("/a./b")),
            ("/a{b}", Some("/a%7Bb%7D")),
            ("/a|b", Some("/a%7Cb")),
            ("/a^b", Some("/a%5Eb")),
            ("/a`b", Some("/a%60b")),
            ("/a%2E%2E/b", Some("/a../b")),
            ("/a/..%2F/b", None),
            ("/a%25b", None),
            ("/a%7e%7E", Some("/a~~")),
            ("/", None),
            ("/a/..", Some("/")),
            ("*", None),
        ];
        for (path, want) in cases {
            assert_eq!(normalize(path), Ok(want.map(str::to_owned)), "{path}");
        }
        assert_eq!(normalize("/a%00b"), Err(Invalid));
    }

    /// What Envoy 1.40 forwarded with `UNESCAPE_AND_FORWARD`.
    #[test]
    fn unescapes_slashes_as_envoy() {
        let cases = [
            ("/a%2Fb", Some("/a/b")),
            ("/a%2fb", Some("/a/b")),
            ("/a%5Cb", Some("/a\\b")),
            ("/a/%2F/../b", Some("/a///../b")),
            ("/a%252Fb", None),
            ("/plain", None),
            ("/a%2", None),
        ];
        for (path, want) in cases {
            assert_eq!(unescape_slashes(path), want.map(str::to_owned), "{path}");
        }
    }
}
