//! Remote media answered with where the content is: the `Location` of the multipart answer,
//! or a 307/308 redirect of the request itself. The content is fetched with a plain GET (no
//! `X-Matrix` signature), redirects followed a few times at most (never in a loop, never to
//! the local network), within the upload limit; what is fetched is kept like any remote
//! media. The content is served here from a loopback port (the test network allows loopback;
//! a real server does not).

use std::sync::{Arc, Mutex};

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use matrix_homeserver::testing::{Intercepted, TestFederation, TestHomeserver};

use crate::media::{get as fetch, upload};

/// A plain HTTP server on a loopback port: `/content` (the bytes, as `text/plain`), `/hop/N`
/// (a redirect to `/hop/N-1`, `/hop/0` to `/content`), `/loop`, `/big` (5000 bytes),
/// `/private` (a redirect to 10.0.0.1); records the `Authorization` headers it receives.
async fn content_server(bytes: &'static [u8]) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let router = axum::Router::new()
        .route(
            "/content",
            get(move |headers: HeaderMap| {
                let record = record.clone();
                async move {
                    if let Some(auth) = headers.get(header::AUTHORIZATION) {
                        let auth = auth.to_str().unwrap_or_default().to_owned();
                        record.lock().expect("the record").push(auth);
                    }
                    (
                        [
                            (header::CONTENT_TYPE, "text/plain"),
                            (header::CONTENT_DISPOSITION, "inline; filename=\"far.txt\""),
                        ],
                        bytes,
                    )
                }
            }),
        )
        .route(
            "/hop/{n}",
            get(|Path(n): Path<u32>| async move {
                let to = if n == 0 { "/content".to_owned() } else { format!("/hop/{}", n - 1) };
                (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
            }),
        )
        .route("/loop", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }))
        .route("/big", get(|| async { vec![b'x'; 5000] }))
        .route(
            "/private",
            get(|| async {
                (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "http://10.0.0.1/content")])
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{address}"), seen)
}

/// A multipart answer whose second part is a `Location`.
fn location_answer(url: &str) -> Intercepted {
    let body = format!(
        "--b\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--b\r\nLocation: {url}\r\n\r\n\r\n--b--\r\n"
    );
    let headers = vec![("content-type".to_owned(), "multipart/mixed; boundary=b".to_owned())];
    Intercepted::AnswerWith(200, headers, body.into_bytes())
}

/// A redirect of the media request itself.
fn redirect_answer(status: u16, url: &str) -> Intercepted {
    Intercepted::AnswerWith(status, vec![("location".to_owned(), url.to_owned())], Vec::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_locations_are_followed_with_bounds() {
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
    let (base, authorizations) = content_server(b"from far away").await;

    // Each case: how a.test answers, and what bob then gets.
    let cases: Vec<(Intercepted, u16, &str)> = vec![
        (location_answer(&format!("{base}/content")), 200, ""),
        (redirect_answer(307, &format!("{base}/content")), 200, ""),
        (redirect_answer(308, &format!("{base}/hop/3")), 200, ""),
        (location_answer(&format!("{base}/hop/3")), 200, ""),
        (location_answer(&format!("{base}/hop/9")), 502, "M_UNKNOWN"),
        (location_answer(&format!("{base}/loop")), 502, "M_UNKNOWN"),
        (location_answer(&format!("{base}/big")), 502, "M_TOO_LARGE"),
        (location_answer(&format!("{base}/private")), 502, "M_UNKNOWN"),
        (location_answer("http://10.0.0.1/content"), 502, "M_UNKNOWN"),
        (location_answer("ftp://127.0.0.1/content"), 502, "M_UNKNOWN"),
        (location_answer("not a url"), 502, "M_UNKNOWN"),
        (redirect_answer(302, &format!("{base}/content")), 502, "M_UNKNOWN"),
        (redirect_answer(307, ""), 502, "M_UNKNOWN"),
    ];
    for (n, (answer, status, errcode)) in cases.into_iter().enumerate() {
        let media = upload(a, &alice.access_token, "text/plain", vec![b'a'; 10]).await;
        let answer = Arc::new(Mutex::new(Some(answer)));
        net.intercept("a.test", move |_, request| {
            if request.uri().path().starts_with("/_matrix/federation/v1/media/") {
                return answer.lock().expect("the answer").take().unwrap_or(Intercepted::Drop);
            }
            Intercepted::Pass
        });
        let got = fetch(b, token, &format!("/_matrix/client/v1/media/download/{media}")).await;
        assert_eq!((got.status, got.errcode().as_str()), (status, errcode), "case {n}");
        let kept = b.storage().media(&media).await.expect("reads");
        if status == 200 {
            assert_eq!(got.bytes, b"from far away", "case {n}");
            assert_eq!(got.content_type, "text/plain", "case {n}");
            let kept = kept.expect("kept");
            assert_eq!((kept.size, kept.upload_name.as_deref()), (13, Some("far.txt")));
            // Kept: asked again, a.test is not asked (it would drop the request).
            let again =
                fetch(b, token, &format!("/_matrix/client/v1/media/download/{media}")).await;
            assert_eq!((again.status, again.bytes.as_slice()), (200, b"from far away".as_slice()));
        } else {
            assert!(kept.is_none(), "case {n}: nothing kept");
        }
        net.stop_intercepting("a.test");
    }
    assert_eq!(*authorizations.lock().expect("the record"), Vec::<String>::new(), "unsigned");
}
