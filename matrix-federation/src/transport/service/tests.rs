use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower::ServiceBuilder;

use super::*;

/// Answers after `delay`, with 200 and the destination as the body, or with the error of a
/// 403 for `refused.org`; counts how many requests it holds at once.
#[derive(Debug, Default)]
struct Slow {
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl Transport for Slow {
    async fn send(
        &self,
        destination: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.seen.lock().expect("lock").push(format!("{destination} {}", request.uri()));
        if destination == "refused.org" {
            return Err(FederationError::Status {
                destination: destination.to_owned(),
                status: 403,
                body: "{}".to_owned(),
            });
        }
        Ok(http::Response::new(Bytes::from(destination.to_owned())))
    }
}

fn request(path: &str) -> http::Request<Bytes> {
    http::Request::get(path).body(Bytes::new()).expect("a request")
}

#[tokio::test]
async fn a_request_reaches_its_destination_through_layers_and_back() {
    let inner = Arc::new(Slow::default());
    let stack = ServiceBuilder::new()
        .concurrency_limit(4)
        .service(TransportService::new(Arc::clone(&inner)));
    let transport = ServiceTransport::new(stack);
    let answer = transport
        .send("them.org", request("/_matrix/federation/v1/version"))
        .await
        .expect("an answer");
    assert_eq!(answer.body().as_ref(), b"them.org");
    assert_eq!(
        inner.seen.lock().expect("lock").as_slice(),
        ["them.org /_matrix/federation/v1/version"]
    );
}

#[tokio::test]
async fn a_federation_error_from_inside_comes_out_unchanged() {
    let transport = ServiceTransport::new(
        ServiceBuilder::new()
            .timeout(Duration::from_secs(5))
            .service(TransportService::new(Arc::new(Slow::default()))),
    );
    let error = transport.send("refused.org", request("/x")).await.expect_err("refused");
    assert!(
        matches!(&error, FederationError::Status { status: 403, destination, .. } if destination == "refused.org"),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_layer_makes_a_slow_destination_unreachable() {
    let slow = Arc::new(Slow { delay: Duration::from_secs(60), ..Slow::default() });
    let transport = ServiceTransport::new(
        ServiceBuilder::new().timeout(Duration::from_secs(1)).service(TransportService::new(slow)),
    );
    let error = transport.send("slow.org", request("/x")).await.expect_err("timed out");
    assert!(
        matches!(&error, FederationError::Unreachable { destination, .. } if destination == "slow.org"),
        "{error:?}"
    );
}

#[tokio::test]
async fn clones_of_a_concurrency_limit_share_its_permits() {
    let inner = Arc::new(Slow { delay: Duration::from_millis(20), ..Slow::default() });
    let transport = Arc::new(ServiceTransport::new(
        ServiceBuilder::new()
            .concurrency_limit(2)
            .service(TransportService::new(Arc::clone(&inner))),
    ));
    let sends: Vec<_> = (0..8)
        .map(|i| {
            let transport = Arc::clone(&transport);
            tokio::spawn(async move { transport.send(&format!("s{i}.org"), request("/x")).await })
        })
        .collect();
    for send in sends {
        send.await.expect("no panic").expect("an answer");
    }
    assert_eq!(inner.seen.lock().expect("lock").len(), 8);
    assert_eq!(inner.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_without_a_destination_is_refused() {
    let mut service = TransportService::new(Arc::new(Slow::default()));
    let error = service.call(request("/x")).await.expect_err("no destination");
    assert!(matches!(error, FederationError::Unreachable { .. }), "{error:?}");
}
