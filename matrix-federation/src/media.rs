//! Media over federation (`GET /_matrix/federation/v1/media/download/{mediaId}` and
//! `/thumbnail/{mediaId}`): the `multipart/mixed` answer of exactly two parts, a JSON object
//! of metadata and then the content itself or a `Location` to fetch it from. [`encode`]
//! writes one, [`parse`] reads one (both strictly bounded by the bytes given; nothing here
//! panics on what another server sends).

pub mod location;

use bytes::Bytes;
use matrix_core::Value;
use matrix_core::json::{Object, parse_lenient};

/// Why an answer is not the `multipart/mixed` the spec describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed multipart answer: {0}")]
pub struct MultipartError(String);

fn malformed(reason: impl Into<String>) -> MultipartError {
    MultipartError(reason.into())
}

/// The second part of an answer: the content, with its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaContent {
    /// Its `Content-Type`, if given.
    pub content_type: Option<String>,
    /// Its `Content-Disposition`, if given.
    pub content_disposition: Option<String>,
    /// The bytes.
    pub bytes: Bytes,
}

/// A media answer: the metadata (a JSON object, empty today) and the content or where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaAnswer {
    /// The first part.
    pub metadata: Object,
    /// The second part.
    pub content: MediaBody,
}

/// The second part of a [`MediaAnswer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaBody {
    /// The content itself.
    Content(MediaContent),
    /// A URL to fetch the content from (a plain HTTP GET, no signature).
    Location(String),
}

/// Writes a two-part answer with `boundary` (which must not occur in `content.bytes`; see
/// [`pick_boundary`]): answers the `Content-Type` header value and the body.
pub fn encode(content: &MediaContent, boundary: &str) -> (String, Vec<u8>) {
    let (content_type, head, tail) = encode_around(
        content.content_type.as_deref(),
        content.content_disposition.as_deref(),
        boundary,
    );
    let mut body = head;
    body.reserve(content.bytes.len() + tail.len());
    body.extend_from_slice(&content.bytes);
    body.extend_from_slice(&tail);
    (content_type, body)
}

/// A two-part answer without its content, for one streamed from elsewhere: answers the
/// `Content-Type` header value, the bytes that go before the content (the JSON part and the
/// content's headers) and those after it. `boundary` must not occur in the content: a
/// streamed content cannot be searched first, so it should be long and random (16 random
/// bytes in hex make a collision improbable past any concern).
pub fn encode_around(
    content_type: Option<&str>,
    content_disposition: Option<&str>,
    boundary: &str,
) -> (String, Vec<u8>, Vec<u8>) {
    let mut head =
        format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n");
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(disposition) = content_disposition {
        head.push_str(&format!("Content-Disposition: {disposition}\r\n"));
    }
    head.push_str("\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    (format!("multipart/mixed; boundary={boundary}"), head.into_bytes(), tail.into_bytes())
}

/// A boundary made of `random` bytes (hex) that does not occur in `content`: the random
/// bytes are extended until it does not (a collision of 16 random bytes is improbable, so
/// this loops at most a few times in practice and ends because the boundary grows).
pub fn pick_boundary(random: &[u8], content: &[u8]) -> String {
    let mut boundary: String = random.iter().map(|b| format!("{b:02x}")).collect();
    while boundary.is_empty() || memchr::memmem::find(content, boundary.as_bytes()).is_some() {
        boundary.push('x');
    }
    boundary
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return Err(malformed(format!("the content type is {essence:?}, not multipart/mixed")));
    }
    for param in params {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim().trim_matches('"');
            // RFC 2046: 1 to 70 characters.
            if value.is_empty() || value.len() > 70 {
                return Err(malformed("the boundary is empty or longer than 70 characters"));
            }
            return Ok(value.to_owned());
        }
    }
    Err(malformed("the content type has no boundary"))
}

/// One part: its headers (names lowercased) and its body.
struct Part<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl Part<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Splits a part into its headers and body (a blank line between them; a part with no
/// header may start with the blank line).
fn split_part(raw: &[u8]) -> Result<Part<'_>, MultipartError> {
    let (head, body) = if let Some(body) = raw.strip_prefix(b"\r\n") {
        (&raw[..0], body)
    } else {
        let end = memchr::memmem::find(raw, b"\r\n\r\n")
            .ok_or_else(|| malformed("a part has no end of headers"))?;
        (&raw[..end], &raw[end + 4..])
    };
    let head = std::str::from_utf8(head).map_err(|_| malformed("part headers are not UTF-8"))?;
    let mut headers = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        if headers.len() > 32 {
            return Err(malformed("a part has too many headers"));
        }
    }
    Ok(Part { headers, body })
}

/// The parts between the delimiters of `body` (the preamble and epilogue are ignored).
fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, MultipartError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let first = memchr::memmem::find(body, delimiter)
        .ok_or_else(|| malformed("the boundary does not occur in the body"))?;
    let mut rest = &body[first + delimiter.len()..];
    let inner = format!("\r\n--{boundary}");
    let inner = inner.as_bytes();
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line break that ends the delimiter line.
        let start = memchr::memmem::find(rest, b"\r\n")
            .ok_or_else(|| malformed("a delimiter line does not end"))?;
        rest = &rest[start + 2..];
        let end = memchr::memmem::find(rest, inner)
            .ok_or_else(|| malformed("the closing delimiter is missing"))?;
        parts.push(&rest[..end]);
        if parts.len() > 2 {
            return Err(malformed("more than two parts"));
        }
        rest = &rest[end + inner.len()..];
    }
}

/// Reads a media answer whose `Content-Type` header is `content_type`.
pub fn parse(content_type: Option<&str>, body: Bytes) -> Result<MediaAnswer, MultipartError> {
    let boundary = boundary_of(content_type.ok_or_else(|| malformed("no content type"))?)?;
    let raw = parts(&body, &boundary)?;
    let [meta, second] = raw[..] else {
        return Err(malformed(format!("{} parts, not two", raw.len())));
    };
    let meta = split_part(meta)?;
    let metadata = match parse_lenient(meta.body) {
        Ok(Value::Object(object)) => object,
        _ => return Err(malformed("the first part is not a JSON object")),
    };
    let second = split_part(second)?;
    if let Some(location) = second.header("location") {
        return Ok(MediaAnswer { metadata, content: MediaBody::Location(location.to_owned()) });
    }
    // Slice the shared buffer rather than copying the content.
    let offset = second.body.as_ptr() as usize - body.as_ptr() as usize;
    let bytes = body.slice(offset..offset + second.body.len());
    let content = MediaContent {
        content_type: second.header("content-type").map(str::to_owned),
        content_disposition: second.header("content-disposition").map(str::to_owned),
        bytes,
    };
    Ok(MediaAnswer { metadata, content: MediaBody::Content(content) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(bytes: &'static [u8]) -> MediaContent {
        MediaContent {
            content_type: Some("image/png".to_owned()),
            content_disposition: Some("inline; filename=\"a.png\"".to_owned()),
            bytes: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn an_encoded_answer_parses_back() {
        let original = content(b"\x89PNG\r\n--not-the-boundary\r\n\r\nbytes");
        let boundary = pick_boundary(&[1, 2, 3, 4], &original.bytes);
        let (content_type, body) = encode(&original, &boundary);
        let answer = parse(Some(&content_type), Bytes::from(body)).expect("parses");
        assert!(answer.metadata.is_empty());
        assert_eq!(answer.content, MediaBody::Content(original));
    }

    #[test]
    fn a_location_answer_parses() {
        let body = "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\
                    Location: https://cdn.example.org/x\r\n\r\n\r\n--b--\r\n";
        let answer =
            parse(Some("multipart/mixed; boundary=\"b\""), Bytes::from(body)).expect("parses");
        assert_eq!(answer.content, MediaBody::Location("https://cdn.example.org/x".to_owned()));
    }

    #[test]
    fn the_boundary_avoids_the_content() {
        let boundary = pick_boundary(&[0xab], b"--ab--abx");
        assert_eq!(boundary, "abxx");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: &[(Option<&str>, &[u8])] = &[
            (None, b"x"),
            (Some("application/json"), b"{}"),
            (Some("multipart/mixed"), b"--b"),
            (Some("multipart/mixed; boundary=b"), b"nothing"),
            (Some("multipart/mixed; boundary=b"), b"--b\r\n\r\n{}"),
            (Some("multipart/mixed; boundary=b"), b"--b\r\n\r\n{}\r\n--b--"),
            (Some("multipart/mixed; boundary=b"), b"--b\r\n\r\nnot json\r\n--b\r\n\r\nx\r\n--b--"),
            (Some("multipart/mixed; boundary=b"), b"--b"),
            (Some("multipart/mixed; boundary=b"), b"--b\r\n"),
        ];
        for (content_type, body) in cases {
            assert!(parse(*content_type, Bytes::from_static(body)).is_err(), "{body:?}");
        }
    }
}
