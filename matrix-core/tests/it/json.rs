//! Canonical JSON: strict and lenient parsing, escapes, limits.

use matrix_core::json::{self, JsonError, MAX_DEPTH, Number, Value};

#[test]
fn strict_rejects_what_canonical_json_forbids() {
    type Case = (&'static [u8], fn(&JsonError) -> bool);
    let cases: [Case; 9] = [
        (br#"{"a":1.0}"#, |e| matches!(e, JsonError::Float { .. })),
        (br#"{"a":1e3}"#, |e| matches!(e, JsonError::Float { .. })),
        (br#"{"a":9007199254740992}"#, |e| matches!(e, JsonError::IntegerOutOfRange { .. })),
        (br#"{"a":-9007199254740992}"#, |e| matches!(e, JsonError::IntegerOutOfRange { .. })),
        (br#"{"a":1,"a":2}"#, |e| matches!(e, JsonError::DuplicateKey { .. })),
        (br#"{"a":"\ud800"}"#, |e| matches!(e, JsonError::LoneSurrogate { .. })),
        (br#"{"a":"\udc00\ud800"}"#, |e| matches!(e, JsonError::LoneSurrogate { .. })),
        (b"{\"a\":\"\xff\"}", |e| matches!(e, JsonError::InvalidUtf8 { offset: 6 })),
        (br#"{"a":01}"#, |e| matches!(e, JsonError::Syntax { .. })),
    ];
    for (input, expected) in cases {
        let err = json::parse_strict(input).expect_err(&String::from_utf8_lossy(input));
        assert!(expected(&err), "{}: {err:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(
        json::parse_strict(br#"[9007199254740991,-9007199254740991]"#).map(|v| v.to_string()),
        Ok("[9007199254740991,-9007199254740991]".to_owned())
    );
}

#[test]
fn lenient_keeps_numbers_as_written() {
    let input = br#"{"f":1.50,"e":1E+2,"big":123456789012345678901234567890,"neg0":-0,"i":-12,"d":1,"d":2}"#;
    let value = json::parse_lenient(input).expect("lenient accepts");
    assert_eq!(
        value.to_string(),
        r#"{"big":123456789012345678901234567890,"d":2,"e":1E+2,"f":1.50,"i":-12,"neg0":-0}"#
    );
    let object = value.as_object().expect("object");
    assert_eq!(object.get("i").and_then(Value::as_i64), Some(-12));
    assert_eq!(object.get("f"), Some(&Value::Number(Number::Raw("1.50".into()))));
}

#[test]
fn escapes_are_the_shortest_form() {
    let all_controls: String = (0u8..0x20).map(char::from).collect();
    let value = Value::from(format!("{all_controls}\"\\/\u{7f}\u{2028}é😀"));
    assert_eq!(
        value.to_string(),
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\\"\\\\/\u{7f}\u{2028}é😀\""
    );
    // Escaped input of any kind comes out in the canonical form.
    let parsed = json::parse_strict(br#""\u0041\/\uD83D\uDE00\u001F""#).expect("valid");
    assert_eq!(parsed.to_string(), "\"A/😀\\u001f\"");
}

#[test]
fn keys_sort_by_code_point() {
    // U+FF21 (3 UTF-8 bytes) sorts before U+1F600 (4 bytes), as code points do;
    // UTF-16 order would put the surrogate pair first.
    let value =
        json::parse_strict("{\"😀\":1,\"Ａ\":2,\"b\":3,\"B\":4}".as_bytes()).expect("valid");
    assert_eq!(value.to_string(), "{\"B\":4,\"b\":3,\"Ａ\":2,\"😀\":1}");
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(json::parse_strict(ok.as_bytes()).is_ok());
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(matches!(json::parse_strict(deep.as_bytes()), Err(JsonError::TooDeep { .. })));
    // Far deeper input neither overflows the stack nor takes long.
    let very_deep = "{\"a\":".repeat(1_000_000);
    assert!(matches!(json::parse_lenient(very_deep.as_bytes()), Err(JsonError::TooDeep { .. })));
}

#[test]
fn syntax_errors_name_the_offset() {
    for (input, offset) in
        [(&b"{\"a\" 1}"[..], 5), (b"[1,]", 3), (b"", 0), (b"nul", 0), (b"\"abc", 4), (b"{} x", 3)]
    {
        match json::parse_strict(input) {
            Err(JsonError::Syntax { offset: at, .. }) => {
                assert_eq!(at, offset, "{}", String::from_utf8_lossy(input))
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(input)),
        }
    }
}
