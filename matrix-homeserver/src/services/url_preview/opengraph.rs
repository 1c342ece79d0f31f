//! OpenGraph metadata (<https://ogp.me/>) from an HTML page, with the page's `<title>`, its
//! `<meta name="description">` and its first `<img>` when the OpenGraph tags lack a title,
//! a description or an image.
//!
//! The page is tokenized (html5gum: the WHATWG tokenizer, tolerant of any input), not built
//! into a tree: what a preview needs are `<meta>`, `<title>` and `<img>` tags, wherever they
//! are. Text is taken as UTF-8 (invalid bytes replaced), or, for a page that declares
//! ISO-8859-1 or windows-1252, as Latin-1 where it is not valid UTF-8. Every value is bounded
//! and its whitespace collapsed.

use html5gum::{DefaultEmitter, StartTag, Token, Tokenizer};
use serde_json::{Map, Value};
use url::Url;

/// OpenGraph tags kept at most.
const MAX_TAGS: usize = 64;
/// Characters kept at most of a value.
const MAX_VALUE_CHARS: usize = 1000;
/// Bytes gathered at most of one value before decoding (four per character at most).
const MAX_VALUE_BYTES: usize = 4 * MAX_VALUE_CHARS;

/// What a page says of itself.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Page {
    /// `og:*` keys with string values, `og:image*` left out (the image is re-hosted, and its
    /// description is made from what was stored).
    pub(crate) fields: Map<String, Value>,
    /// The image to show: `og:image` (or `og:image:url`, `og:image:secure_url`), else the
    /// first `<img>`; an absolute http(s) URL.
    pub(crate) image: Option<Url>,
}

/// What the tokens said, as raw bytes (decoded once the charset is known).
#[derive(Debug, Default)]
struct Found {
    og: Vec<(String, Vec<u8>)>,
    description: Option<Vec<u8>>,
    title: Option<Vec<u8>>,
    image: Option<Vec<u8>>,
    charset: Option<String>,
}

/// The value of the attribute `name` of `tag`.
fn attribute<'a>(tag: &'a StartTag<()>, name: &[u8]) -> Option<&'a [u8]> {
    tag.attributes.get(name).map(|value| &value.value[..])
}

/// The charset named in a `Content-Type` value (`text/html; charset=utf-8`).
pub(crate) fn charset_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    })
}

impl Found {
    fn meta(&mut self, tag: &StartTag<()>) {
        if let Some(charset) = attribute(tag, b"charset") {
            self.charset.get_or_insert_with(|| String::from_utf8_lossy(charset).to_lowercase());
        }
        let Some(content) = attribute(tag, b"content") else { return };
        if attribute(tag, b"http-equiv").is_some_and(|e| e.eq_ignore_ascii_case(b"content-type"))
            && let Some(charset) = charset_of(&String::from_utf8_lossy(content))
        {
            self.charset.get_or_insert(charset);
        }
        // `property` is OpenGraph's; many pages use `name` for it too.
        let key = attribute(tag, b"property").or_else(|| attribute(tag, b"name"));
        let Some(key) = key.map(|k| String::from_utf8_lossy(k).trim().to_ascii_lowercase()) else {
            return;
        };
        let content = bounded(content);
        if key.starts_with("og:") {
            if self.og.len() < MAX_TAGS && !self.og.iter().any(|(k, _)| *k == key) {
                self.og.push((key, content));
            }
        } else if key == "description" && self.description.is_none() {
            self.description = Some(content);
        }
    }
}

/// At most [`MAX_VALUE_BYTES`] of `bytes`.
fn bounded(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(MAX_VALUE_BYTES)].to_vec()
}

/// Reads what a page says of itself; `content_type` is the answer's `Content-Type` (its
/// charset, if any, wins over the page's own), `base` the URL the page came from (relative
/// image URLs are resolved against it).
pub(crate) fn parse(html: &[u8], content_type: &str, base: &Url) -> Page {
    let mut found = Found { charset: charset_of(content_type), ..Found::default() };
    let mut emitter = DefaultEmitter::default();
    // `<title>`, `<script>`, `<style>` hold text, not tags.
    emitter.naively_switch_states(true);
    let mut title: Option<Vec<u8>> = None;
    for token in Tokenizer::new_with_emitter(html, emitter) {
        let Ok(token) = token;
        match token {
            Token::StartTag(tag) => match &tag.name[..] {
                b"meta" => found.meta(&tag),
                b"title" if found.title.is_none() && title.is_none() => title = Some(Vec::new()),
                b"img" if found.image.is_none() => {
                    found.image = attribute(&tag, b"src").map(bounded);
                }
                _ => {}
            },
            Token::String(text) => {
                if let Some(title) = &mut title {
                    let room = MAX_VALUE_BYTES.saturating_sub(title.len());
                    title.extend_from_slice(&text.value[..text.value.len().min(room)]);
                }
            }
            Token::EndTag(tag) if &tag.name[..] == b"title" => {
                if let Some(text) = title.take() {
                    found.title = Some(text);
                }
            }
            _ => {}
        }
    }
    // An unclosed `<title>` runs to the end of the page: its text is kept.
    if found.title.is_none() {
        found.title = title;
    }
    found.page(base)
}

impl Found {
    fn decode(&self, bytes: &[u8]) -> Option<String> {
        let latin1 = matches!(
            self.charset.as_deref(),
            Some("iso-8859-1" | "latin1" | "l1" | "windows-1252" | "cp1252" | "us-ascii")
        );
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            // Entities are decoded to UTF-8 by the tokenizer, so a Latin-1 page's text may be
            // valid UTF-8 still; where it is not, it is Latin-1.
            Err(_) if latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        };
        let mut collapsed = String::new();
        for word in text.split_whitespace() {
            if !collapsed.is_empty() {
                collapsed.push(' ');
            }
            collapsed.push_str(word);
        }
        let collapsed: String = collapsed.chars().take(MAX_VALUE_CHARS).collect();
        (!collapsed.is_empty()).then_some(collapsed)
    }

    fn page(self, base: &Url) -> Page {
        let mut page = Page::default();
        let mut image = None;
        for (key, value) in &self.og {
            if matches!(key.as_str(), "og:image" | "og:image:url" | "og:image:secure_url") {
                image = image.or_else(|| self.decode(value));
            } else if !key.starts_with("og:image")
                && let Some(value) = self.decode(value)
            {
                page.fields.insert(key.clone(), Value::String(value));
            }
        }
        if !page.fields.contains_key("og:title")
            && let Some(title) = self.title.as_deref().and_then(|t| self.decode(t))
        {
            page.fields.insert("og:title".to_owned(), Value::String(title));
        }
        if !page.fields.contains_key("og:description")
            && let Some(text) = self.description.as_deref().and_then(|d| self.decode(d))
        {
            page.fields.insert("og:description".to_owned(), Value::String(text));
        }
        let image = image.or_else(|| self.image.as_deref().and_then(|i| self.decode(i)));
        page.image = image
            .and_then(|image| base.join(&image).ok())
            .filter(|url| matches!(url.scheme(), "http" | "https"));
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://example.org/articles/1").expect("a URL")
    }

    fn field<'a>(page: &'a Page, key: &str) -> Option<&'a str> {
        page.fields.get(key).and_then(Value::as_str)
    }

    #[test]
    fn opengraph_tags_are_read_and_relative_images_resolved() {
        let html = br#"<!doctype html><html><head>
            <title>Fallback</title>
            <meta property="og:title" content="The &amp; title">
            <META PROPERTY="og:description" CONTENT="  Two
                lines ">
            <meta property="og:image" content="/img/a.png">
            <meta property="og:image:width" content="1200">
            <meta property="og:site_name" content="Example">
            <meta property="og:type" content="article">
            <meta property="og:url" content="https://example.org/a">
            <meta property="og:title" content="A second title is ignored">
            </head><body><img src="other.png"></body></html>"#;
        let page = parse(html, "text/html", &base());
        assert_eq!(field(&page, "og:title"), Some("The & title"));
        assert_eq!(field(&page, "og:description"), Some("Two lines"));
        assert_eq!(field(&page, "og:site_name"), Some("Example"));
        assert_eq!(field(&page, "og:type"), Some("article"));
        assert_eq!(field(&page, "og:url"), Some("https://example.org/a"));
        assert!(!page.fields.contains_key("og:image:width"), "the image's own come later");
        assert_eq!(page.image.as_ref().map(Url::as_str), Some("https://example.org/img/a.png"));
    }

    #[test]
    fn title_description_and_first_image_are_the_fallbacks() {
        let html = b"<html><head><title>Just a <b>page</b></title>
            <meta name=description content='About it'>
            <script>var s = '<meta property=\"og:title\" content=\"not this\">';</script>
            </head><body><img src='data:image/png;base64,AAAA'><img src='x.png'></body>";
        let page = parse(html, "text/html; charset=utf-8", &base());
        assert_eq!(field(&page, "og:title"), Some("Just a <b>page</b>"));
        assert_eq!(field(&page, "og:description"), Some("About it"));
        // The first <img> is a data: URL, which is not fetched.
        assert_eq!(page.image, None);
    }

    #[test]
    fn malformed_and_hostile_pages_give_what_they_can() {
        for html in [
            &b""[..],
            b"\0\xff\xfe<<<>>>",
            b"<meta property=og:title content=",
            b"<title>unclosed",
            b"<!-- <meta property='og:title' content='commented'> ",
            b"<meta property='og:image' content='javascript:alert(1)'>",
        ] {
            let page = parse(html, "text/html", &base());
            assert!(page.image.is_none(), "{html:?}");
            assert!(page.fields.get("og:title").is_none_or(|t| t == "unclosed"), "{html:?}");
        }
        let page = parse(b"<title>unclosed", "text/html", &base());
        assert_eq!(field(&page, "og:title"), Some("unclosed"));
        // Many and long tags are bounded.
        let mut html = String::new();
        for i in 0..500 {
            html.push_str(&format!("<meta property='og:k{i}' content='{}'>", "x".repeat(5000)));
        }
        let page = parse(html.as_bytes(), "text/html", &base());
        assert_eq!(page.fields.len(), MAX_TAGS);
        assert!(page.fields.values().all(|v| v.as_str().is_some_and(|s| s.len() == 1000)));
    }

    #[test]
    fn latin1_pages_are_decoded_as_latin1() {
        let html = b"<meta charset=iso-8859-1><title>Caf\xe9</title>";
        let page = parse(html, "text/html", &base());
        assert_eq!(field(&page, "og:title"), Some("Caf\u{e9}"));
        let html = b"<meta charset=iso-8859-1><title>Caf&eacute;</title>";
        let page = parse(html, "text/html", &base());
        assert_eq!(field(&page, "og:title"), Some("Caf\u{e9}"));
        let html = b"<title>Caf\xe9</title>";
        let page = parse(html, "text/html; charset=windows-1252", &base());
        assert_eq!(field(&page, "og:title"), Some("Caf\u{e9}"));
        let page = parse(b"<title>Caf\xe9</title>", "text/html", &base());
        assert_eq!(field(&page, "og:title"), Some("Caf\u{fffd}"));
        assert_eq!(charset_of("text/html; Charset=\"UTF-8\""), Some("utf-8".to_owned()));
        assert_eq!(charset_of("text/html"), None);
    }
}
