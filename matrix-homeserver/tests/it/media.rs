//! The media repository: thumbnails (sizes, methods, the refusals: decompression bombs,
//! corrupt images, content that is not an image), and media of other servers fetched over
//! federation once and then served from the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use matrix_homeserver::testing::{Intercepted, TestFederation, TestHomeserver};
use serde_json::Value;

/// A `width` × `height` image with a gradient (so that encoders cannot cheat), encoded as
/// `format`.
pub(crate) fn image_bytes(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

/// The CRC-32 of PNG chunks (ISO 3309), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG chunk: length, type, data, CRC.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
    out
}

/// A well-formed PNG header declaring 100 000 × 100 000 pixels (10 gigapixels), with a tiny
/// compressed body: a decompression bomb.
fn bomb_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 100_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// Uploads `bytes` as `content_type` for `token`; answers the `server/id` of its mxc URI.
pub(crate) async fn upload(
    server: &TestHomeserver,
    token: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload?filename=f", server.base_url()))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    body["content_uri"].as_str().expect("a uri").strip_prefix("mxc://").expect("mxc").to_owned()
}

/// An answer: status, content type, body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) bytes: Vec<u8>,
}

impl Answer {
    pub(crate) fn errcode(&self) -> String {
        let body: Value = serde_json::from_slice(&self.bytes).unwrap_or(Value::Null);
        body["errcode"].as_str().unwrap_or_default().to_owned()
    }

    /// The answer decoded as an image: its dimensions.
    fn dimensions(&self) -> (u32, u32) {
        let image = image::load_from_memory(&self.bytes).expect("the answer is an image");
        (image.width(), image.height())
    }
}

/// GETs `path` (with `token` when given).
pub(crate) async fn get(server: &TestHomeserver, token: Option<&str>, path: &str) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.base_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.expect("a body").to_vec();
    Answer { status, content_type, bytes }
}

/// The authenticated thumbnail path of `media` (`server/id`) with `query`.
pub(crate) fn thumb(media: &str, query: &str) -> String {
    format!("/_matrix/client/v1/media/thumbnail/{media}?{query}")
}

async fn thumbnails_crop_and_scale_png_and_jpeg(backend: crate::Backend) {
    let dir = tempfile::tempdir().expect("a directory");
    let media_dir = dir.path().join("media");
    let server = match crate::start_changed(backend, |c| {
        c.limits.media_path = Some(media_dir.clone())
    })
    .await
    {
        Some(s) => s,
        None => return,
    };
    let alice = server.register_user("alice", "pw").await;
    let token = alice.access_token.as_str();
    let png =
        upload(&server, token, "image/png", image_bytes(400, 300, image::ImageFormat::Png)).await;
    let jpeg =
        upload(&server, token, "image/jpeg", image_bytes(1000, 500, image::ImageFormat::Jpeg))
            .await;

    // Rounded up to the smallest standard size of the method at least as large as asked.
    let answer = get(&server, Some(token), &thumb(&png, "width=30&height=30&method=crop")).await;
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "image/png"));
    assert_eq!(answer.dimensions(), (32, 32));
    let answer = get(&server, Some(token), &thumb(&png, "width=100&height=100&method=scale")).await;
    assert_eq!(answer.dimensions(), (320, 240));
    // Never upscaled: the 400×300 image fits the 800×600 box as it is.
    let answer = get(&server, Some(token), &thumb(&png, "width=700&height=500")).await;
    assert_eq!(answer.dimensions(), (400, 300));
    // A JPEG answers a JPEG, scaled into 640×480 keeping its 2:1 aspect.
    let answer =
        get(&server, Some(token), &thumb(&jpeg, "width=600&height=400&method=scale")).await;
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(answer.dimensions(), (640, 320));
    // A crop larger than the standard crops is made at the asked size.
    let answer = get(&server, Some(token), &thumb(&jpeg, "width=200&height=100&method=crop")).await;
    assert_eq!(answer.dimensions(), (200, 100));

    // A second request answers the cached thumbnail, kept next to the content (named by
    // its hash).
    let path = thumb(&png, "width=96&height=96&method=crop");
    let first = get(&server, Some(token), &path).await;
    assert_eq!((first.status, first.dimensions()), (200, (96, 96)));
    let id = png.split('/').nth(1).expect("an id");
    let row = server.storage().media(id).await.expect("reads").expect("stored");
    let sha256 = row.sha256.expect("content addressed");
    let content = media_dir.join("content");
    assert!(content.join(format!("{sha256}.96x96-crop")).is_file(), "the thumbnail is kept");
    let second = get(&server, Some(token), &path).await;
    assert_eq!(first.bytes, second.bytes);
    // The legacy path serves no media uploaded while unauthenticated media is frozen (the
    // default).
    let legacy = format!("/_matrix/media/v3/thumbnail/{png}?width=96&height=96&method=crop");
    let answer = get(&server, None, &legacy).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (404, "M_NOT_FOUND"));
}

async fn thumbnails_refuse_bombs_corrupt_images_and_text(backend: crate::Backend) {
    let server = match crate::start(backend).await {
        Some(s) => s,
        None => return,
    };
    let alice = server.register_user("alice", "pw").await;
    let token = alice.access_token.as_str();
    let query = "width=32&height=32&method=crop";

    let bomb = upload(&server, token, "image/png", bomb_png()).await;
    let answer = get(&server, Some(token), &thumb(&bomb, query)).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (413, "M_TOO_LARGE"));

    let mut broken = image_bytes(200, 200, image::ImageFormat::Png);
    broken.truncate(broken.len() / 2);
    let broken = upload(&server, token, "image/png", broken).await;
    let answer = get(&server, Some(token), &thumb(&broken, query)).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (400, "M_UNKNOWN"));

    let text = upload(&server, token, "text/plain", b"not a picture".to_vec()).await;
    let answer = get(&server, Some(token), &thumb(&text, query)).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (400, "M_UNKNOWN"));
    let lying = upload(&server, token, "image/png", b"not a picture either".to_vec()).await;
    let answer = get(&server, Some(token), &thumb(&lying, query)).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (400, "M_UNKNOWN"));

    let png =
        upload(&server, token, "image/png", image_bytes(64, 64, image::ImageFormat::Png)).await;
    let answer = get(&server, Some(token), &thumb(&png, "width=0&height=32")).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (400, "M_INVALID_PARAM"));
    let answer = get(&server, Some(token), &thumb(&png, "width=32&height=32&method=zoom")).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (400, "M_INVALID_PARAM"));
    let answer = get(&server, None, &thumb(&png, query)).await;
    assert_eq!(answer.status, 401, "the authenticated path needs a token");

    // Ids and server names from the path never reach the file system as they are.
    for path in [
        "/_matrix/client/v1/media/thumbnail/localhost/..%2F..%2Fetc%2Fpasswd?width=32&height=32",
        "/_matrix/client/v1/media/download/localhost/..%2Fsecret",
        "/_matrix/client/v1/media/download/localhost/a.part",
        "/_matrix/client/v1/media/download/..%2F..%2F/abc",
    ] {
        let answer = get(&server, Some(token), path).await;
        assert!(matches!(answer.status, 400 | 404), "{path}: {}", answer.status);
    }
}

crate::on_every_backend!(
    thumbnails_crop_and_scale_png_and_jpeg,
    thumbnails_refuse_bombs_corrupt_images_and_text
);

/// Counts the media requests `a.test` receives; answers them as `answer` says.
fn count_media_requests(
    net: &TestFederation,
    answer: impl Fn() -> Intercepted + Send + Sync + 'static,
) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    net.intercept("a.test", move |_, request| {
        if request.uri().path().starts_with("/_matrix/federation/v1/media/") {
            seen.fetch_add(1, Ordering::SeqCst);
            return answer();
        }
        Intercepted::Pass
    });
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_is_fetched_once_then_served_from_the_cache() {
    let dir = tempfile::tempdir().expect("a directory");
    let media_dir = dir.path().to_owned();
    let net = TestFederation::start_with(&["a.test", "b.test"], move |name| {
        let mut config = TestHomeserver::config();
        if name == "b.test" {
            config.limits.media_path = Some(media_dir.join("b"));
            // Unfrozen: what was fetched is served on the legacy paths too.
            config.limits.enable_authenticated_media = false;
        }
        config
    })
    .await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let png = image_bytes(300, 200, image::ImageFormat::Png);
    let media = upload(a, &alice.access_token, "image/png", png.clone()).await;
    let count = count_media_requests(&net, || Intercepted::Pass);
    let download = format!("/_matrix/client/v1/media/download/{media}");

    // The legacy path does not fetch.
    let legacy = get(b, None, &format!("/_matrix/media/v3/download/{media}")).await;
    assert_eq!(legacy.status, 404);
    let first = get(b, Some(&bob.access_token), &download).await;
    assert_eq!((first.status, first.content_type.as_str()), (200, "image/png"));
    assert_eq!(first.bytes, png);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let id = media.split('/').nth(1).expect("an id");
    let kept = b.storage().media(&format!("a.test/{id}")).await.expect("reads").expect("kept");
    assert_eq!((kept.uploader.as_str(), kept.size), ("a.test", png.len() as u64));

    // From now on a.test is not asked: it would fail every media request.
    let count = count_media_requests(&net, || Intercepted::Drop);
    let second = get(b, Some(&bob.access_token), &download).await;
    assert_eq!((second.status, second.bytes == png), (200, true));
    let thumbnail =
        get(b, Some(&bob.access_token), &thumb(&media, "width=96&height=96&method=crop")).await;
    assert_eq!((thumbnail.status, thumbnail.dimensions()), (200, (96, 96)));
    let legacy = get(b, None, &format!("/_matrix/media/v3/download/{media}")).await;
    assert_eq!(legacy.status, 200, "what was fetched is served on the legacy path too");
    assert_eq!(count.load(Ordering::SeqCst), 0);
    net.stop_intercepting("a.test");

    // A thumbnail of media not fetched yet fetches it (once) and thumbnails it here.
    let jpeg = upload(
        a,
        &alice.access_token,
        "image/jpeg",
        image_bytes(900, 900, image::ImageFormat::Jpeg),
    )
    .await;
    let count = count_media_requests(&net, || Intercepted::Pass);
    let answer = get(b, Some(&bob.access_token), &thumb(&jpeg, "width=320&height=240")).await;
    assert_eq!((answer.status, answer.content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(answer.dimensions(), (240, 240));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Requests at once for media not fetched yet make one fetch.
    let gif =
        upload(a, &alice.access_token, "image/gif", image_bytes(20, 20, image::ImageFormat::Gif))
            .await;
    let count = count_media_requests(&net, || Intercepted::Pass);
    let path = format!("/_matrix/client/v1/media/download/{gif}");
    let answers = futures_join(b, &bob.access_token, &path, 5).await;
    assert!(answers.iter().all(|&status| status == 200), "{answers:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Media a.test does not have is 404, and nothing is kept.
    let missing =
        get(b, Some(&bob.access_token), "/_matrix/client/v1/media/download/a.test/nothing").await;
    assert_eq!((missing.status, missing.errcode().as_str()), (404, "M_NOT_FOUND"));
}

/// The statuses of `n` GETs of `path` sent at once.
async fn futures_join(server: &TestHomeserver, token: &str, path: &str, n: usize) -> Vec<u16> {
    let url = format!("{}{path}", server.base_url());
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, token) = (url.clone(), token.to_owned());
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("answers");
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("the request task ends"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federation_thumbnail_endpoint_answers_multipart() {
    let net = TestFederation::start(&["a.test", "b.test"]).await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let media =
        upload(a, &alice.access_token, "image/png", image_bytes(100, 50, image::ImageFormat::Png))
            .await;
    let id = media.split('/').nth(1).expect("an id");
    let client = b.federation_client().expect("federation is on");
    let path =
        format!("/_matrix/federation/v1/media/thumbnail/{id}?width=32&height=32&method=crop");
    let response =
        client.send("a.test", http::Method::GET, &path, None, None).await.expect("a answers");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
    let answer =
        matrix_homeserver::matrix_federation::media::parse(content_type, response.body().clone())
            .expect("a multipart answer");
    let matrix_homeserver::matrix_federation::media::MediaBody::Content(content) = answer.content
    else {
        panic!("the content, not a redirect");
    };
    assert_eq!(content.content_type.as_deref(), Some("image/png"));
    let image = image::load_from_memory(&content.bytes).expect("an image");
    assert_eq!((image.width(), image.height()), (32, 32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_too_large_or_garbage_is_refused_and_not_kept() {
    let net = TestFederation::start_with(&["a.test", "b.test"], |name| {
        let mut config = TestHomeserver::config();
        if name == "b.test" {
            config.limits.max_media_bytes = 1000;
        }
        config
    })
    .await;
    let (a, b) = (net.server("a.test"), net.server("b.test"));
    let alice = a.register_user("alice", "pw").await;
    let bob = b.register_user("bob", "pw").await;
    let token = Some(bob.access_token.as_str());
    // The metadata of another server's media is kept under `server/id`.
    let kept = |media: &str| {
        let key = media.to_owned();
        async move { b.storage().media(&key).await.expect("reads") }
    };

    // Larger than b.test takes.
    let big = upload(a, &alice.access_token, "application/octet-stream", vec![7; 2000]).await;
    let answer = get(b, token, &format!("/_matrix/client/v1/media/download/{big}")).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (502, "M_TOO_LARGE"));
    assert!(kept(&big).await.is_none());

    // An answer far over the bound, and garbage.
    let small = upload(a, &alice.access_token, "text/plain", b"hello".to_vec()).await;
    let path = format!("/_matrix/client/v1/media/download/{small}");
    count_media_requests(&net, || Intercepted::Answer(200, vec![b'x'; 100_000]));
    let answer = get(b, token, &path).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (502, "M_TOO_LARGE"));
    count_media_requests(&net, || Intercepted::Answer(200, b"garbage".to_vec()));
    let answer = get(b, token, &path).await;
    assert_eq!((answer.status, answer.errcode().as_str()), (502, "M_UNKNOWN"));
    assert!(kept(&small).await.is_none());

    // Once a.test behaves, the same media is fetched and kept.
    net.stop_intercepting("a.test");
    let answer = get(b, token, &path).await;
    assert_eq!((answer.status, answer.bytes.as_slice()), (200, b"hello".as_slice()));
    assert!(kept(&small).await.is_some());
}
