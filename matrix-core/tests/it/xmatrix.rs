//! X-Matrix authorization headers.

use matrix_core::{
    SigningKey, Value, json,
    xmatrix::{self, XMatrix, XMatrixError},
};

fn key() -> SigningKey {
    SigningKey::from_seed("a_bcd", &[3; 32])
}

#[test]
fn sign_parse_verify_round_trip_with_body() {
    let body: Value =
        json::parse_strict(br#"{"pdus":[],"edus":[{"edu_type":"m.typing"}]}"#).expect("json");
    let uri = "/_matrix/federation/v1/send/123?x=1";
    let header = xmatrix::sign_request(
        &key(),
        "origin.example",
        "dest.example:8448",
        "PUT",
        uri,
        Some(&body),
    );
    let text = header.to_header_value();
    assert!(text.starts_with(r#"X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:a_bcd",sig=""#));
    let parsed = XMatrix::parse(&text).expect("parses");
    assert_eq!(parsed, header);
    let public = key().public_key();
    xmatrix::verify_request(&parsed, "dest.example:8448", "PUT", uri, Some(&body), &public)
        .expect("verifies");
    // Any change to what is signed breaks the signature.
    assert_eq!(
        xmatrix::verify_request(&parsed, "dest.example:8448", "POST", uri, Some(&body), &public),
        Err(XMatrixError::BadSignature)
    );
    assert_eq!(
        xmatrix::verify_request(&parsed, "dest.example:8448", "PUT", uri, None, &public),
        Err(XMatrixError::BadSignature)
    );
    assert!(matches!(
        xmatrix::verify_request(&parsed, "other.example", "PUT", uri, Some(&body), &public),
        Err(XMatrixError::WrongDestination { .. })
    ));
}

#[test]
fn parse_accepts_what_real_servers_send() {
    let sig = matrix_core::b64::encode([9u8; 64]);
    let variants = [
        format!(r#"X-Matrix origin="a.example",key="ed25519:1",sig="{sig}""#),
        format!(
            r#"X-Matrix origin=a.example:8448 , KEY="ed25519:1",	Sig={sig},destination="b",extra="ignored""#
        ),
        format!(r#"x-matrix   signature="{sig}",origin="a\.example",key=ed25519:1"#),
    ];
    for header in variants {
        let parsed = XMatrix::parse(&header).unwrap_or_else(|e| panic!("{header}: {e}"));
        assert!(parsed.origin.starts_with("a.example"), "{header}");
        assert_eq!(parsed.key, "ed25519:1");
        assert_eq!(parsed.signature, [9u8; 64]);
    }
}

#[test]
fn parse_rejects_malformed_headers() {
    let sig = matrix_core::b64::encode([9u8; 64]);
    let cases = [
        ("Bearer abc".to_owned(), XMatrixError::Scheme),
        (format!(r#"X-Matrix key="ed25519:1",sig="{sig}""#), XMatrixError::Missing("origin")),
        (r#"X-Matrix origin="a",key="ed25519:1""#.to_owned(), XMatrixError::Missing("sig")),
        (
            format!(r#"X-Matrix origin="a",origin="b",key="ed25519:1",sig="{sig}""#),
            XMatrixError::Duplicate("origin"),
        ),
        (
            r#"X-Matrix origin="a",key="ed25519:1",sig="short""#.to_owned(),
            XMatrixError::SignatureEncoding,
        ),
        (
            format!(r#"X-Matrix origin="a",key="rsa:1",sig="{sig}""#),
            XMatrixError::KeyId("rsa:1".into()),
        ),
        (r#"X-Matrix origin="a"#.to_owned(), XMatrixError::Syntax { offset: 18 }),
    ];
    for (header, expected) in cases {
        assert_eq!(XMatrix::parse(&header), Err(expected), "{header}");
    }
}
