//! Connection hygiene over raw TCP (finding 14 of the security review): a client that sends
//! its headers or its body slowly is cut off, and the number of connections is capped.

use std::time::{Duration, Instant};

use matrix_homeserver::testing::TestHomeserver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose waits are short, so that the tests finish quickly.
async fn impatient(max_connections: usize) -> crate::Server {
    let mut config = TestHomeserver::config();
    config.http.header_read_timeout_secs = 1;
    config.http.body_read_timeout_secs = 1;
    config.http.media_upload_timeout_secs = 1;
    config.http.idle_timeout_secs = 2;
    config.http.max_connections = max_connections;
    crate::start_with(crate::Backend::Memory, config).await.expect("memory")
}

async fn connect(server: &TestHomeserver) -> TcpStream {
    let address = server.base_url().trim_start_matches("http://").to_owned();
    TcpStream::connect(address).await.expect("connects")
}

/// Whether the server has closed the connection (a read gives end of file or an error)
/// within `wait`; anything it sends first is skipped.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Reads what the server answers until it has sent a status line, within `wait`.
async fn status_within(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_14_slow_headers_are_disconnected() {
    let server = impatient(16).await;
    let mut stream = connect(&server).await;
    stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\n").await.expect("writes");
    // One header byte every 200 ms, as a slowloris client would, for at most 5 s.
    let started = Instant::now();
    let mut cut = false;
    for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(25) {
        if stream.write_all(&[*byte]).await.is_err()
            || closed_within(&mut stream, Duration::from_millis(200)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow client was still connected after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(4), "cut after {:?}", started.elapsed());
    // An ordinary request is still answered.
    let response = reqwest::get(format!("{}/_matrix/client/versions", server.base_url()))
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_14_idle_and_silent_connections_are_closed() {
    let server = impatient(16).await;
    // A connection that never sends a byte.
    let mut silent = connect(&server).await;
    assert!(closed_within(&mut silent, Duration::from_secs(4)).await, "a silent connection stayed");
    // A kept-alive connection with no next request.
    let mut kept = connect(&server).await;
    kept.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writes");
    let status = status_within(&mut kept, Duration::from_secs(2)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    assert!(closed_within(&mut kept, Duration::from_secs(4)).await, "an idle connection stayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_14_slow_bodies_get_408() {
    let server = impatient(16).await;
    for (path, token) in
        [("/_matrix/client/v3/login", None), ("/_matrix/media/v3/upload", Some(()))]
    {
        let token = match token {
            Some(()) => {
                Some(server.register_user(&format!("u{}", path.len()), "pw").await.access_token)
            }
            None => None,
        };
        let mut stream = connect(&server).await;
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"type\""
        );
        stream.write_all(head.as_bytes()).await.expect("writes");
        // The rest of the body never comes.
        let status = status_within(&mut stream, Duration::from_secs(4)).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 408 Request Timeout"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_14_connections_are_capped() {
    let server = impatient(2).await;
    // Two connections that send nothing take both places.
    let _first = connect(&server).await;
    let _second = connect(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect(&server).await;
    third
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writes");
    assert_eq!(status_within(&mut third, Duration::from_millis(500)).await, None, "over the cap");
    // Once the silent ones are cut (header timeout), the third is served.
    let status = status_within(&mut third, Duration::from_secs(5)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
}
