//! jsonb's normal form of one shape of JSON, computed without Postgres: a
//! flat object whose values are strings or nulls, which is what the audit
//! capture makes of a row image or a row key (`chain::row_json`).
//!
//! For such an object, [`flat_object`] returns what `jsonb_in` followed by
//! `jsonb_out` would: the text in jsonb's normal form (keys ordered by
//! length, then bytes; `", "` and `": "` between them; strings escaped as
//! Postgres' `escape_json` escapes them) and the binary container `jsonb_in`
//! would store (`convertJsonbObject` in jsonb_util.c, unchanged from
//! Postgres 9.4 to 18), without its varlena header. Anything else (other
//! value types, nesting, whitespace, a repeated key, a `\u` escape that is
//! not a control character, invalid JSON) gives None, and the caller uses
//! jsonb's own functions, so that every error and every edge case stays
//! Postgres' own. The extension's tests compare both paths byte for byte.

/// jsonb.h: a JEntry's length or end offset.
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
/// jsonb.h: the JEntry holds the end offset rather than the length.
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
/// jsonb.h: every JB_OFFSET_STRIDE'th JEntry stores an offset.
const JB_OFFSET_STRIDE: usize = 32;
const JB_FOBJECT: u32 = 0x2000_0000;
/// Larger values are left to jsonb_in (which knows its own limits).
const MAX_DATA: usize = 1 << 26;

/// The normal text and the container bytes (native byte order, as
/// `jsonb_in` stores them on this machine) of a flat JSON object of
/// strings and nulls; None for anything else.
pub fn flat_object(json: &str) -> Option<(String, Vec<u8>)> {
    let mut pairs = parse(json.as_bytes())?;
    // jsonb's key order: shorter first, then bytewise (lengthCompareJsonbString).
    pairs.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));
    if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
        return None; // jsonb keeps the last of repeated keys: left to it
    }
    let data: usize = pairs
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    if data > MAX_DATA {
        return None;
    }
    Some((text(&pairs), container(&pairs, data)))
}

type Pair = (Vec<u8>, Option<Vec<u8>>);

fn text(pairs: &[Pair]) -> String {
    let mut out = Vec::with_capacity(
        2 + pairs
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(4, Vec::len) + 8)
            .sum::<usize>(),
    );
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        escape(&mut out, k);
        out.extend_from_slice(b": ");
        match v {
            Some(v) => escape(&mut out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    // Keys and values came from a &str with only ASCII escapes decoded.
    String::from_utf8(out).expect("decoded from UTF-8 with ASCII escapes only")
}

/// Postgres' escape_json.
fn escape(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            c if c < b' ' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// convertJsonbObject for string and null values: the header, every key's
/// JEntry then every value's, then the keys' bytes and the values' bytes.
fn container(pairs: &[Pair], data: usize) -> Vec<u8> {
    let n = pairs.len();
    let mut out = Vec::with_capacity(4 + 8 * n + data);
    out.extend_from_slice(&((n as u32) | JB_FOBJECT).to_ne_bytes());
    let mut total: u32 = 0;
    let mut entry = |out: &mut Vec<u8>, i: usize, kind: u32, len: usize| {
        total += len as u32;
        let meta = if i.is_multiple_of(JB_OFFSET_STRIDE) {
            kind | (total & JENTRY_OFFLENMASK) | JENTRY_HAS_OFF
        } else {
            kind | len as u32
        };
        out.extend_from_slice(&meta.to_ne_bytes());
    };
    for (i, (k, _)) in pairs.iter().enumerate() {
        entry(&mut out, i, JENTRY_ISSTRING, k.len());
    }
    for (i, (_, v)) in pairs.iter().enumerate() {
        match v {
            Some(v) => entry(&mut out, i + n, JENTRY_ISSTRING, v.len()),
            None => entry(&mut out, i + n, JENTRY_ISNULL, 0),
        }
    }
    for (k, _) in pairs {
        out.extend_from_slice(k);
    }
    for v in pairs.iter().filter_map(|(_, v)| v.as_ref()) {
        out.extend_from_slice(v);
    }
    out
}

/// `{"k":"v","k2":null}` exactly: no whitespace, string keys, string or
/// null values; escapes decoded (`\u` only for control characters).
fn parse(s: &[u8]) -> Option<Vec<Pair>> {
    let mut p = Cursor { s, i: 0 };
    p.eat(b'{')?;
    let mut pairs = Vec::new();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            let k = p.string()?;
            p.eat(b':')?;
            let v = if p.peek() == Some(b'"') {
                Some(p.string()?)
            } else {
                for &c in b"null" {
                    p.eat(c)?;
                }
                None
            };
            pairs.push((k, v));
            match p.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    (p.i == s.len()).then_some(pairs)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }
    fn string(&mut self) -> Option<Vec<u8>> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            // Copy the run up to the next quote, backslash or control byte.
            let run = self.s[self.i..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < b' ')?;
            out.extend_from_slice(&self.s[self.i..self.i + run]);
            self.i += run;
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => out.push(match self.next()? {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => b'\x08',
                    b'f' => b'\x0c',
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        let hex = self.s.get(self.i..self.i + 4)?;
                        self.i += 4;
                        let v = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                        // Control characters only, not NUL (jsonb refuses it).
                        if v == 0 || v >= 0x20 {
                            return None;
                        }
                        v as u8
                    }
                    _ => return None,
                }),
                _ => return None, // a raw control byte: invalid JSON
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(json: &str) -> Option<String> {
        flat_object(json).map(|(t, _)| t)
    }

    #[test]
    fn normal_text() {
        assert_eq!(t("{}").as_deref(), Some("{}"));
        assert_eq!(
            t(r#"{"name":"a","id":"1","x":null}"#).as_deref(),
            Some(r#"{"x": null, "id": "1", "name": "a"}"#)
        );
        // Same length: bytewise.
        assert_eq!(
            t(r#"{"b":"2","a":"1"}"#).as_deref(),
            Some(r#"{"a": "1", "b": "2"}"#)
        );
        assert_eq!(
            t(r#"{"k":"q\"b\\s\/\n\t\u0001\u001f é"}"#).as_deref(),
            Some(r#"{"k": "q\"b\\s/\n\t\u0001\u001f é"}"#)
        );
    }

    #[test]
    fn row_json_round_trip() {
        let cols = vec![
            (
                "payload".to_string(),
                Some("line\nnext \"q\" \u{1}".to_string()),
            ),
            ("id".to_string(), Some("42".to_string())),
            ("gone".to_string(), None),
        ];
        let (text, _) = flat_object(&crate::chain::row_json(&cols)).unwrap();
        assert_eq!(
            text,
            r#"{"id": "42", "gone": null, "payload": "line\nnext \"q\" \u0001"}"#
        );
    }

    #[test]
    fn other_shapes_are_left_to_jsonb() {
        for j in [
            r#"{"a":1}"#,
            r#"{"a":true}"#,
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":["b"]}"#,
            r#"{ "a":"b"}"#,
            r#"{"a" :"b"}"#,
            r#"{"a":"b","a":"c"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\u0000"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"b"} "#,
            r#"{"a":"b""#,
            r#"{"a":"b",}"#,
            r#"{"a":nul}"#,
            "{\"a\":\"\n\"}",
            r#"{"a":"\x"}"#,
            r#"["a"]"#,
            r#""a""#,
            "",
        ] {
            assert!(flat_object(j).is_none(), "{j}");
        }
    }

    #[test]
    fn container_layout() {
        let (_, c) = flat_object(r#"{"bb":"x","a":null}"#).unwrap();
        let words: Vec<u32> = c[..20]
            .chunks(4)
            .map(|w| u32::from_ne_bytes(w.try_into().unwrap()))
            .collect();
        // 2 pairs; key "a" (offset form: end 1), key "bb" (len 2), value
        // null (len 0), value "x" (len 1); then "a", "bb", "x".
        assert_eq!(
            words,
            vec![
                2 | JB_FOBJECT,
                JENTRY_HAS_OFF | 1,
                2,
                JENTRY_ISNULL,
                JENTRY_ISSTRING | 1
            ]
        );
        assert_eq!(&c[20..], b"abbx");
        // The 33rd JEntry (index 32) holds the running end offset.
        let cols: Vec<(String, Option<String>)> = (0..20)
            .map(|i| (format!("c{i:02}"), Some("vv".to_string())))
            .collect();
        let (_, c) = flat_object(&crate::chain::row_json(&cols)).unwrap();
        let e32 = u32::from_ne_bytes(c[4 + 32 * 4..4 + 33 * 4].try_into().unwrap());
        // 20 keys of 3 bytes, then values 20..32 of 2 bytes: end of value 12.
        assert_eq!(e32, JENTRY_HAS_OFF | (20 * 3 + 13 * 2));
    }
}
