//! A network link the tests can cut: a TCP proxy on loopback in front of one of our federation
//! listeners. The server's name is the proxy's address, so every federation connection to it
//! (from our other servers and from Synapse) passes through here; TLS passes through untouched.
//!
//! Cutting closes the connections open through it and refuses new ones (accepted, then closed
//! at once: the peer sees a reset or an early end, as when a network drops). Healing forwards
//! again. What the server itself sends out does not pass through its own link.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One proxy; it stops (with every connection through it) when dropped.
pub(crate) struct Link {
    /// `127.0.0.1:PORT`, where it listens: the server name of the server behind it.
    pub(crate) address: String,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        let (cut, watching) = watch::channel(false);
        let task = tokio::spawn(accept(listener, upstream, watching));
        Link { address, cut, task }
    }

    /// Closes the connections open through the link and refuses new ones until
    /// [`Link::heal`].
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub(crate) fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The connections' tasks end with it: each watches the sender, now gone.
        self.task.abort();
    }
}

/// Accepts until aborted; each connection is forwarded by a task of its own.
async fn accept(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors, say: wait rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if *cut.borrow() {
            drop(inbound);
            continue;
        }
        tokio::spawn(forward(inbound, upstream, cut.clone()));
    }
}

/// Copies both ways between `inbound` and a new connection to `upstream` until either side
/// closes or the link is cut (or dropped).
async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        // Cut, or the link dropped (the sender gone): both streams are dropped here.
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
