//! Where media bytes live: one directory (the configured one, or a temporary one removed
//! when the server stops), content addressed.
//!
//! - `content/{sha256}`: the content of every item stored since content addressing (ours and
//!   other servers'), named by the SHA-256 of its bytes in lowercase hex; two items with the
//!   same bytes share one file;
//! - `content/{sha256}.{width}x{height}-{method}`: its cached thumbnails;
//! - `tmp/{random}.part`: files being written (an upload, a fetch, a thumbnail), renamed into
//!   `content/` once whole and synced, removed when abandoned;
//! - `{media_id}` and `{sha256 of server/media_id}.remote` at the top: the content of items
//!   stored before content addressing (their rows name no hash), still read.
//!
//! No name from the network ever becomes a path: hashes are ours, media ids are checked
//! (`[A-Za-z0-9_-]`) before they get here.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::error::ApiError;

/// The bytes each read of a download takes from the file and hands to the connection.
const CHUNK: usize = 256 << 10;

/// Chunks read ahead of the connection per download (bounded memory per download:
/// `CHUNK * (READ_AHEAD + 1)`).
const READ_AHEAD: usize = 2;

/// The bytes an upload buffers before writing to its file.
const WRITE_BUFFER: usize = 256 << 10;

/// Syncs a directory, so that the entries made in it survive a power loss.
#[cfg(unix)]
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Directories cannot be opened (nor synced) this way elsewhere.
#[cfg(not(unix))]
async fn sync_dir(_: &Path) -> std::io::Result<()> {
    Ok(())
}

fn io_error(doing: &str) -> impl FnOnce(std::io::Error) -> ApiError + '_ {
    move |e| ApiError::unknown(format!("{doing}: {e}"))
}

/// The media directory.
#[derive(Debug)]
pub(super) struct Files {
    dir: PathBuf,
    /// The temporary directory when none was configured, removed when dropped.
    _temporary: Option<tempfile::TempDir>,
}

impl Files {
    /// The directory at `path`, or a temporary one.
    pub(super) fn new(path: Option<PathBuf>) -> std::io::Result<Self> {
        let (dir, temporary) = match path {
            Some(dir) => (dir, None),
            None => {
                let temporary = tempfile::Builder::new().prefix("matrix-media-").tempdir()?;
                (temporary.path().to_owned(), Some(temporary))
            }
        };
        Ok(Files { dir, _temporary: temporary })
    }

    /// The content of a hash.
    pub(super) fn content(&self, sha256: &str) -> PathBuf {
        self.dir.join("content").join(sha256)
    }

    /// The content of an item stored before content addressing, under `name`.
    pub(super) fn legacy(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes the file at `path` and its cached thumbnails (`{path}.{name}`); one that is
    /// not there is skipped.
    pub(super) async fn remove_with_thumbnails(&self, path: &Path) -> Result<(), ApiError> {
        let mut paths = vec![path.to_owned()];
        for name in super::thumbnail::cached_names() {
            let mut thumbnail = path.to_owned().into_os_string();
            thumbnail.push(format!(".{name}"));
            paths.push(PathBuf::from(thumbnail));
        }
        for path in paths {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ApiError::unknown(format!("removing media: {e}"))),
            }
        }
        Ok(())
    }

    /// Whether a file is at `path`.
    pub(super) async fn exists(&self, path: &Path) -> Result<bool, ApiError> {
        tokio::fs::try_exists(path).await.map_err(io_error("the media directory"))
    }

    /// A new temporary file, and its path.
    pub(super) async fn temporary(&self) -> Result<(tokio::fs::File, PathBuf), ApiError> {
        let dir = self.dir.join("tmp");
        tokio::fs::create_dir_all(&dir).await.map_err(io_error("the media directory"))?;
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|_| ApiError::unknown("no randomness available"))?;
        let path = dir.join(format!("{}.part", super::hex(&random)));
        let file = tokio::fs::File::create_new(&path).await.map_err(io_error("writing media"))?;
        Ok((file, path))
    }

    /// Renames the whole, synced temporary file `temp` to `target` and syncs the directory
    /// (without it, a power loss can leave a row naming no file). On failure, `temp` is
    /// removed.
    pub(super) async fn commit(&self, temp: &Path, target: &Path) -> Result<(), ApiError> {
        let rename = async {
            let dir = target.parent().unwrap_or(&self.dir);
            tokio::fs::create_dir_all(dir).await?;
            // Content addressed: a file of that name holds these very bytes (or is a
            // thumbnail made the same way), so replacing it changes nothing a reader sees.
            tokio::fs::rename(temp, target).await?;
            sync_dir(dir).await
        };
        if let Err(e) = rename.await {
            let _ = tokio::fs::remove_file(temp).await;
            return Err(ApiError::unknown(format!("writing media: {e}")));
        }
        Ok(())
    }

    /// Keeps `bytes` under `target`, whole (a temporary file renamed into place).
    pub(super) async fn write_whole(&self, target: &Path, bytes: &[u8]) -> Result<(), ApiError> {
        let (mut out, temp) = self.temporary().await?;
        let write = async {
            out.write_all(bytes).await?;
            out.sync_all().await
        };
        if let Err(e) = write.await {
            drop(out);
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(ApiError::unknown(format!("writing media: {e}")));
        }
        drop(out);
        self.commit(&temp, target).await
    }

    /// The whole file at `path` if it is at most `max` bytes (`Err` 413 past it), or `None`
    /// when there is no such file.
    pub(super) async fn read_whole(
        &self,
        path: &Path,
        max: u64,
    ) -> Result<Option<Bytes>, ApiError> {
        let Some((mut file, length)) = self.open(path).await? else { return Ok(None) };
        if length > max {
            return Err(ApiError::with_code(
                413,
                "M_TOO_LARGE",
                format!("this server does not read media over {max} bytes whole"),
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        (&mut file)
            .take(max + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(io_error("reading media"))?;
        if bytes.len() as u64 > max {
            return Err(ApiError::with_code(413, "M_TOO_LARGE", "the media grew while read"));
        }
        Ok(Some(Bytes::from(bytes)))
    }

    /// The file at `path` opened for reading, with its length, or `None`.
    pub(super) async fn open(
        &self,
        path: &Path,
    ) -> Result<Option<(tokio::fs::File, u64)>, ApiError> {
        match tokio::fs::File::open(path).await {
            Ok(file) => {
                let length = file.metadata().await.map_err(io_error("reading media"))?.len();
                Ok(Some((file, length)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ApiError::unknown(format!("reading media: {e}"))),
        }
    }
}

/// Bytes being written to a temporary file of [`Files`], hashed and counted as they come.
/// Dropped unfinished (the client went away, the body was too slow or too large), its file is
/// removed.
pub(super) struct Sink {
    out: tokio::io::BufWriter<tokio::fs::File>,
    temp: PathBuf,
    hasher: sha2::Sha256,
    size: u64,
    done: bool,
}

impl Sink {
    /// A sink into a new temporary file of `files`.
    pub(super) async fn new(files: &Files) -> Result<Self, ApiError> {
        let (file, temp) = files.temporary().await?;
        Ok(Sink {
            out: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file),
            temp,
            hasher: sha2::Sha256::new(),
            size: 0,
            done: false,
        })
    }

    /// The bytes written so far.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes.
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        self.hasher.update(bytes);
        self.out.write_all(bytes).await.map_err(io_error("writing media"))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes the bytes durable under their hash in `files`: answers the hash (lowercase hex)
    /// and the size.
    pub(super) async fn finish(mut self, files: &Files) -> Result<(String, u64), ApiError> {
        let sha256 = super::hex(&std::mem::take(&mut self.hasher).finalize());
        self.out.flush().await.map_err(io_error("writing media"))?;
        self.out.get_ref().sync_all().await.map_err(io_error("writing media"))?;
        self.done = true;
        files.commit(&self.temp, &files.content(&sha256)).await?;
        Ok((sha256, self.size))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.done {
            // Synchronous, but only an unlink: an abandoned write leaves nothing behind.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A body streaming a file (with an optional head and tail, for a multipart answer): a task
/// reads [`CHUNK`]s ahead of the connection, at most [`READ_AHEAD`] of them, so that a
/// download of any size holds about a megabyte; it stops when the receiver goes away.
#[derive(Debug)]
pub(crate) struct FileBody {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
}

impl FileBody {
    /// Streams `length` bytes of `file`, after `head` and before `tail`.
    ///
    /// Each chunk is one read on the blocking pool straight into a buffer that is reused once
    /// the connection has sent what it held: no copy through tokio's own file buffer, and no
    /// allocation per chunk.
    pub(super) fn new(file: tokio::fs::File, length: u64, head: Bytes, tail: Bytes) -> Self {
        let total = head.len() as u64 + length + tail.len() as u64;
        let (send, chunks) = tokio::sync::mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            if !head.is_empty() && send.send(Ok(head)).await.is_err() {
                return;
            }
            let file = std::sync::Arc::new(file.into_std().await);
            let mut buffer = bytes::BytesMut::new();
            let mut left = length;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                let reading = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    use std::io::Read as _;
                    // Takes back the space of chunks already sent (it is ours alone again),
                    // else allocates; the zeroing is the price of no `unsafe`.
                    buffer.reserve(want);
                    buffer.resize(want, 0);
                    let read = (&*reading).read(&mut buffer);
                    (buffer, read)
                })
                .await;
                let chunk = match read {
                    Ok((mut read_into, read)) => {
                        let chunk = match read {
                            Ok(0) => Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the media file is shorter than its length",
                            )),
                            Ok(n) => {
                                read_into.truncate(n);
                                Ok(read_into.split().freeze())
                            }
                            Err(e) => Err(e),
                        };
                        read_into.clear();
                        buffer = read_into;
                        chunk
                    }
                    Err(e) => {
                        buffer = bytes::BytesMut::new();
                        Err(std::io::Error::other(e))
                    }
                };
                let failed = chunk.is_err();
                if let Ok(chunk) = &chunk {
                    left -= chunk.len() as u64;
                }
                if send.send(chunk).await.is_err() || failed {
                    return;
                }
            }
            if !tail.is_empty() {
                let _ = send.send(Ok(tail)).await;
            }
        });
        FileBody { chunks, remaining: total }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.chunks.poll_recv(cx).map(|chunk| {
            chunk.map(|chunk| {
                chunk.map(|bytes| {
                    self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
                    hyper::body::Frame::data(bytes)
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}
