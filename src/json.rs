//! JSON (RFC 8259): the one reader every JSON text goes through (the configuration, discovery
//! documents, key sets, token endpoint and introspection answers, token headers and payloads,
//! the sealed cookies' payloads) and the writer of the filter's own JSON.
//!
//! Stricter than RFC 8259 where a lax reading could be read two ways: a name twice in one object
//! is an error (parsers disagree on which one wins, RFC 7515 §5.2 lets a JWS reader refuse), and
//! so is nesting deeper than [`MAX_DEPTH`]. Otherwise it accepts exactly what serde_json does
//! (`make fuzz` compares the two), except for numbers too large for an `f64`, which are kept as
//! written: a number is held as its text, read as an integer where one is wanted, never rounded
//! and never formatted from a float.

use std::collections::BTreeMap;

/// An object's members, ordered by name (the order the writer puts them in).
pub type Map<K = String, V = Value> = BTreeMap<K, V>;

/// Containers nested deeper than this are refused (serde_json's limit).
pub const MAX_DEPTH: usize = 127;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Map),
}

/// A number as it was written (checked against RFC 8259's grammar), or an integer the filter made.
/// Two numbers are equal when they are written alike (`1.0` is not `1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number(String);

impl Number {
    /// The number when it is written as a whole number from 0 to 2^64 − 1 (no fraction, no
    /// exponent: `1.0` and `1e3` are not).
    pub fn as_u64(&self) -> Option<u64> {
        if self.0.bytes().all(|b| b.is_ascii_digit()) {
            self.0.parse().ok()
        } else {
            None
        }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Value {
    /// The member `name` of an object; `None` for anything else.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_object()?.get(name)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Value::String(_))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    /// An object from its members.
    pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
        // Inserted one by one: `collect` into a `BTreeMap` sorts first, and that sort's code
        // costs the module more than these few inserts.
        let mut map = Map::new();
        for (name, value) in members {
            map.insert(name.to_string(), value);
        }
        Value::Object(map)
    }

    /// The JSON text, compact, members in name order (as serde_json writes it).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => out.push_str(&n.0),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Object(map) => write_object(map, out),
        }
    }
}

/// A member that must be a string when present: `Some(None)` when it is absent or null,
/// `Some(Some(text))` for a string, `None` (malformed) for anything else.
pub fn optional_string(map: &Map, name: &str) -> Option<Option<String>> {
    match map.get(name) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// An object's JSON text (see [`Value::to_json`]).
pub fn object_to_json(map: &Map) -> String {
    let mut out = String::new();
    write_object(map, &mut out);
    out
}

fn write_object(map: &Map, out: &mut String) {
    out.push('{');
    for (i, (name, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        value.write(out);
    }
    out.push('}');
}

/// A string with the escapes serde_json writes: `"`, `\` and the controls below U+0020.
fn write_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                for nibble in [b >> 4, b & 0xf] {
                    out.push(HEX.get(nibble).copied().map_or('0', char::from));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(Number(n.to_string()))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Value {
        Value::Array(items.into_iter().map(Value::String).collect())
    }
}

impl From<Map> for Value {
    fn from(map: Map) -> Value {
        Value::Object(map)
    }
}

/// Why a text is not JSON, and where (1-based line and column, counted in bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub what: &'static str,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.what, self.line, self.column
        )
    }
}

/// Reads one JSON value, with nothing but whitespace around it.
pub fn from_slice(bytes: &[u8]) -> Result<Value, Error> {
    let mut reader = Reader { bytes, pos: 0 };
    let value = reader.value(0).map_err(|what| reader.error(what))?;
    reader.whitespace();
    if reader.pos < bytes.len() {
        return Err(reader.error("trailing characters"));
    }
    Ok(value)
}

/// Reads a JSON object (anything else is an error).
pub fn object_from_slice(bytes: &[u8]) -> Result<Map, Error> {
    match from_slice(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error {
            what: "not a JSON object",
            line: 1,
            column: 1,
        }),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Step<T> = Result<T, &'static str>;

impl Reader<'_> {
    fn error(&self, what: &'static str) -> Error {
        let before = self.bytes.get(..self.pos).unwrap_or(self.bytes);
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        let column = 1 + before.iter().rev().take_while(|b| **b != b'\n').count();
        Error { what, line, column }
    }

    /// Steps back over the byte just read, so that an error points at it.
    fn back(&mut self, what: &'static str) -> &'static str {
        self.pos = self.pos.saturating_sub(1);
        what
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8], value: Value) -> Step<Value> {
        for expected in word {
            match self.next() {
                Some(b) if b == *expected => {}
                Some(_) => return Err(self.back("expected ident")),
                None => return Err("EOF while parsing a value"),
            }
        }
        Ok(value)
    }

    fn value(&mut self, depth: usize) -> Step<Value> {
        self.whitespace();
        match self.peek() {
            None => Err("EOF while parsing a value"),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'"') => {
                self.pos += 1;
                self.string().map(Value::String)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                let depth = Self::deeper(depth)?;
                self.pos += 1;
                self.array(depth)
            }
            Some(b'{') => {
                let depth = Self::deeper(depth)?;
                self.pos += 1;
                self.object(depth)
            }
            Some(_) => Err("expected value"),
        }
    }

    fn deeper(depth: usize) -> Step<usize> {
        if depth >= MAX_DEPTH {
            Err("recursion limit exceeded")
        } else {
            Ok(depth + 1)
        }
    }

    fn array(&mut self, depth: usize) -> Step<Value> {
        let mut items = Vec::new();
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.whitespace();
            match self.next() {
                Some(b',') => {}
                Some(b']') => return Ok(Value::Array(items)),
                Some(_) => return Err(self.back("expected `,` or `]`")),
                None => return Err("EOF while parsing a list"),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Step<Value> {
        let mut map = Map::new();
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.whitespace();
            let name_at = self.pos;
            match self.next() {
                Some(b'"') => {}
                Some(_) => return Err(self.back("key must be a string")),
                None => return Err("EOF while parsing an object"),
            }
            let name = self.string()?;
            self.whitespace();
            match self.next() {
                Some(b':') => {}
                Some(_) => return Err(self.back("expected `:`")),
                None => return Err("EOF while parsing an object"),
            }
            let value = self.value(depth)?;
            if map.insert(name, value).is_some() {
                self.pos = name_at;
                return Err("duplicate name in an object");
            }
            self.whitespace();
            match self.next() {
                Some(b',') => {}
                Some(b'}') => return Ok(Value::Object(map)),
                Some(_) => return Err(self.back("expected `,` or `}`")),
                None => return Err("EOF while parsing an object"),
            }
        }
    }

    /// The rest of a string whose opening quote was read.
    fn string(&mut self) -> Step<String> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            out.extend_from_slice(self.bytes.get(start..self.pos).unwrap_or_default());
            match self.next() {
                Some(b'"') => {
                    // The input's own bytes and whole escaped characters: valid unless the input
                    // was not UTF-8.
                    return String::from_utf8(out).map_err(|_| "invalid unicode code point");
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => {
                    return Err(self
                        .back("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                None => return Err("EOF while parsing a string"),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Step<()> {
        let c = match self.next() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                            return Err("lone leading surrogate in hex escape");
                        }
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err("lone leading surrogate in hex escape");
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err("lone trailing surrogate in hex escape"),
                    code => code,
                };
                char::from_u32(code).ok_or("invalid unicode code point")?
            }
            Some(_) => return Err(self.back("invalid escape")),
            None => return Err("EOF while parsing a string"),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Step<u32> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = match self.next() {
                Some(b) => match char::from(b).to_digit(16) {
                    Some(digit) => digit,
                    None => return Err(self.back("invalid escape")),
                },
                None => return Err("EOF while parsing a string"),
            };
            code = code * 16 + digit;
        }
        Ok(code)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as written.
    fn number(&mut self) -> Step<Value> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.at_least_one_digit()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.at_least_one_digit()?;
        }
        let text = self.bytes.get(start..self.pos).ok_or("invalid number")?;
        // Only ASCII digits, signs, `.` and `e` were taken.
        let text = std::str::from_utf8(text).map_err(|_| "invalid number")?;
        Ok(Value::Number(Number(text.to_string())))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Step<()> {
        match self.next() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            Some(_) => Err(self.back("invalid number")),
            None => Err("EOF while parsing a value"),
        }
    }
}

/// Tests write JSON with serde_json's `json!`: the same value here.
#[cfg(test)]
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        from_slice(v.to_string().as_bytes()).unwrap()
    }
}

/// An object written with serde_json's `json!`, as a map here.
#[cfg(test)]
pub fn map(v: serde_json::Value) -> Map {
    match Value::from(v) {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's reading of the same text, as a value here (numbers by their integer value
    /// where they have one, their text otherwise).
    fn same(ours: &Value, theirs: &serde_json::Value) -> bool {
        match (ours, theirs) {
            (Value::Null, serde_json::Value::Null) => true,
            (Value::Bool(a), serde_json::Value::Bool(b)) => a == b,
            (Value::Number(a), serde_json::Value::Number(b)) => {
                a.as_u64() == b.as_u64() && (a.as_u64().is_some() || close(a.as_str(), b.as_f64()))
            }
            (Value::String(a), serde_json::Value::String(b)) => a == b,
            (Value::Array(a), serde_json::Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
            }
            (Value::Object(a), serde_json::Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
            }
            _ => false,
        }
    }

    /// serde_json reads a fraction to within a few units in the last place (no `float_roundtrip`).
    fn close(text: &str, theirs: Option<f64>) -> bool {
        match (text.parse::<f64>(), theirs) {
            (Ok(a), Some(b)) => a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-15,
            _ => false,
        }
    }

    fn agrees(text: &[u8]) {
        let ours = from_slice(text);
        let theirs = serde_json::from_slice::<serde_json::Value>(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert!(same(a, b), "{:?}", String::from_utf8_lossy(text)),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{:?}: ours {:?}, serde_json {:?}",
                String::from_utf8_lossy(text),
                ours,
                theirs
            ),
        }
    }

    #[test]
    fn reads_what_serde_json_reads_and_refuses_what_it_refuses() {
        let cases: &[&[u8]] = &[
            b"null",
            b"true",
            b"false",
            b" \t\r\n1 \n",
            b"0",
            b"-0",
            b"-",
            b"01",
            b"1.",
            b".5",
            b"1.5",
            b"1e5",
            b"1E+5",
            b"1e-5",
            b"1e",
            b"1e+",
            b"-01",
            b"+1",
            b"1.5e3",
            b"0.0e0",
            b"18446744073709551615",
            b"18446744073709551616",
            b"-9223372036854775808",
            b"\"\"",
            b"\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"",
            b"\"\\u0041\\u00e9\\u20ac\"",
            b"\"\\ud83d\\ude00\"",
            b"\"\\ud83d\"",
            b"\"\\ude00\"",
            b"\"\\ud83d\\u0041\"",
            b"\"\\ud83dx\"",
            b"\"\\u12\"",
            b"\"\\uZZZZ\"",
            b"\"\\x\"",
            b"\"a\x01b\"",
            b"\"a\x7fb\"",
            b"\"\xc3\xa9\"",
            b"\"\xff\"",
            b"\"\xed\xa0\x80\"",
            b"\"unterminated",
            b"[]",
            b"[ ]",
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            b"[1,2",
            b"{}",
            b"{ }",
            b"{\"a\":1}",
            b"{\"a\" : [1, {}]}",
            b"{\"a\":1,}",
            b"{a:1}",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{1:1}",
            b"{\"a\":1",
            b"",
            b"   ",
            b"nul",
            b"nulls",
            b"truefalse",
            b"[true false]",
            b"1 2",
            b"\xef\xbb\xbf1",
            b"[\"\\u0000\"]",
            b"{\"\\u0061\":1}",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"[-]",
            b"1.0e+",
            b"{\"a\":{\"b\":{\"c\":[null]}}}",
        ];
        for case in cases {
            agrees(case);
        }
    }

    #[test]
    fn refuses_a_name_twice_in_one_object_at_any_depth() {
        for text in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":1,"b":{"c":1,"c":2}}"#,
            r#"[{"x":[{"y":1,"y":1}]}]"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let e = from_slice(text.as_bytes()).unwrap_err();
            assert_eq!(e.what, "duplicate name in an object", "{text}");
        }
        assert!(from_slice(br#"{"a":{"a":{"a":1}}}"#).is_ok());
    }

    #[test]
    fn nests_as_deep_as_serde_json_and_no_deeper() {
        for depth in [1, 126, 127, 128, 129, 5000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            agrees(arrays.as_bytes());
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            agrees(objects.as_bytes());
        }
        let e = from_slice("[".repeat(128).as_bytes()).unwrap_err();
        assert_eq!(e.what, "recursion limit exceeded");
    }

    #[test]
    fn numbers_are_integers_only_when_written_as_integers() {
        let n = |text: &str| from_slice(text.as_bytes()).unwrap().as_u64();
        assert_eq!(n("0"), Some(0));
        assert_eq!(n("1700000000"), Some(1_700_000_000));
        assert_eq!(n("18446744073709551615"), Some(u64::MAX));
        for not in [
            "18446744073709551616",
            "-1",
            "-0",
            "1.0",
            "1e3",
            "1E0",
            "0.5",
        ] {
            assert_eq!(n(not), None, "{not}");
        }
        // Kept as written, never rounded through a float.
        let big = "123456789012345678901234567890.5e-3";
        assert_eq!(from_slice(big.as_bytes()).unwrap().to_json(), big);
        assert_eq!(Value::from(42u64).to_json(), "42");
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let text = serde_json::json!({
            "b": [1, "two", null, true, false, {"z": {}, "a": []}],
            "a": "quote \" backslash \\ slash / controls \u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\u{7f} é € 😀",
            "": 18446744073709551615u64,
        });
        let ours = Value::from(text.clone());
        assert_eq!(ours.to_json(), serde_json::to_string(&text).unwrap());
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            Value::from(all_controls.as_str()).to_json(),
            serde_json::to_string(&all_controls).unwrap()
        );
        // What it writes reads back the same.
        assert_eq!(from_slice(ours.to_json().as_bytes()).unwrap(), ours);
        assert_eq!(
            Value::object([("error", "x".into()), ("n", 7u64.into())]).to_json(),
            r#"{"error":"x","n":7}"#
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = from_slice(b"{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!((e.what, e.line, e.column), ("expected `:`", 3, 7));
        assert_eq!(e.to_string(), "expected `:` at line 3 column 7");
        assert_eq!(from_slice(b"{} x").unwrap_err().what, "trailing characters");
        assert!(object_from_slice(b"[1]").is_err());
        assert!(object_from_slice(b"{\"a\":[1]}").is_ok());
    }

    #[test]
    fn accessors_read_only_their_own_kind() {
        let v = from_slice(br#"{"s":"x","n":5,"a":[1],"o":{"k":null},"b":true,"z":null}"#).unwrap();
        assert_eq!(v.get("s").and_then(Value::as_str), Some("x"));
        assert_eq!(v.get("n").and_then(Value::as_str), None);
        assert_eq!(v.get("n").and_then(Value::as_u64), Some(5));
        assert_eq!(v.get("s").and_then(Value::as_u64), None);
        assert_eq!(v.get("a").and_then(Value::as_array).map(Vec::len), Some(1));
        assert!(v.get("o").is_some_and(Value::is_object));
        assert!(v
            .get("o")
            .and_then(|o| o.get("k"))
            .is_some_and(Value::is_null));
        assert!(v.get("s").is_some_and(Value::is_string));
        assert_eq!(v.get("b"), Some(&Value::Bool(true)));
        assert_eq!(v.get("missing"), None);
        assert_eq!(Value::Null.get("s"), None);
    }
}
