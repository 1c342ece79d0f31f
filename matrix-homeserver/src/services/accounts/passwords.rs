//! Password hashing: argon2id on a fixed pool of threads that reuse their memory.
//!
//! Each hash takes its memory cost in RAM and a core for tens of milliseconds. The pool has
//! [`THREADS`] thread(s), each with one block buffer it keeps, so a burst of logins queues
//! instead of taking the server's memory, and the memory is allocated once (the allocator
//! would otherwise keep every blocking thread's freed buffer resident).
//!
//! The queue is bounded: a request that finds `queue` hashes already waiting is answered 429
//! `M_LIMIT_EXCEEDED` at once, rather than making every login on the server wait behind a
//! flood of password guesses.
//!
//! Parameters: m = 7 MiB, t = 5, p = 1, one of OWASP's equivalent argon2id settings (the one
//! that needs the least memory). Hashes are PHC strings, so hashes made with other parameters
//! verify too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// Threads hashing at once (one: logins are rate-limited, and each thread keeps its buffer).
const THREADS: usize = 1;
/// Memory cost in KiB, passes, lanes (OWASP: m=7168, t=5, p=1).
const M_COST: u32 = 7 * 1024;
const T_COST: u32 = 5;
const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;

enum Job {
    Hash { password: String, salt: [u8; 16], reply: oneshot::Sender<Result<String, String>> },
    Verify { password: String, hash: Option<String>, reply: oneshot::Sender<bool> },
}

fn params() -> Params {
    Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).unwrap_or_default()
}

/// Hashes into `out` with a buffer that grows to what `params` needs and is kept.
fn hash_into(
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    blocks: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut blocks[..needed],
    )
}

fn hash(password: &str, salt: &[u8; 16], blocks: &mut Vec<Block>) -> Result<String, String> {
    let mut out = [0u8; OUTPUT_LEN];
    hash_into(params(), password.as_bytes(), salt, &mut out, blocks).map_err(|e| e.to_string())?;
    // PHC strings use base64 without padding, as Matrix's unpadded base64.
    Ok(format!(
        "$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${}",
        matrix_core::b64::encode(salt),
        matrix_core::b64::encode(out)
    ))
}

fn verify(password: &str, phc: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    if hash_into(params, password.as_bytes(), salt, &mut out, blocks).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    argon2::password_hash::Output::new(&out).is_ok_and(|out| out == expected)
}

/// A hash nobody's password matches, checked for unknown users so that a login takes as long
/// whether or not the user exists.
fn decoy(blocks: &mut Vec<Block>) -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash("decoy", b"matrix-homeserve", blocks).unwrap_or_default())
}

/// How long a client refused for a full queue is told to wait.
const RETRY_AFTER_MS: u64 = 1000;

/// One homeserver's place in the pool's queue: how many of its jobs are submitted and not
/// yet finished (the one being hashed included), and how many may be.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    waiting: Arc<AtomicUsize>,
    bound: usize,
}

impl Queue {
    pub(crate) fn new(bound: usize) -> Self {
        Queue { waiting: Arc::new(AtomicUsize::new(0)), bound: bound.max(1) }
    }
}

/// Counts a job out of its queue when it is finished (or dropped unrun).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn worker(jobs: Arc<Mutex<mpsc::Receiver<(Job, Waiting)>>>) {
    let mut blocks = Vec::new();
    loop {
        let next = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        // The job counts as waiting until it is done (and no longer once its answer is sent,
        // so that the caller's next job finds its place free).
        let Ok((job, waiting)) = next else { return };
        match job {
            Job::Hash { password, salt, reply } => {
                let answer = hash(&password, &salt, &mut blocks);
                drop(waiting);
                let _ = reply.send(answer);
            }
            Job::Verify { password, hash, reply } => {
                let known = hash.is_some();
                let phc = hash.unwrap_or_else(|| decoy(&mut blocks).to_owned());
                let answer = verify(&password, &phc, &mut blocks) && known;
                drop(waiting);
                let _ = reply.send(answer);
            }
        }
    }
}

type Sender = mpsc::Sender<(Job, Waiting)>;

fn pool() -> Result<&'static Mutex<Sender>, ApiError> {
    static POOL: OnceLock<Mutex<Sender>> = OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let (sender, receiver) = mpsc::channel();
    let receiver = Arc::new(Mutex::new(receiver));
    for i in 0..THREADS {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("password-hash-{i}"))
            .spawn(move || worker(receiver))
            .map_err(|e| ApiError::unknown(format!("starting a hashing thread: {e}")))?;
    }
    Ok(POOL.get_or_init(|| Mutex::new(sender)))
}

/// Queues a job, or answers 429 when the queue is full.
fn submit(job: Job, queue: &Queue) -> Result<(), ApiError> {
    let pool = pool()?;
    let queued = queue.waiting.fetch_add(1, Ordering::AcqRel);
    let waiting = Waiting(queue.waiting.clone());
    if queued >= queue.bound {
        drop(waiting);
        return Err(ApiError::limit_exceeded(RETRY_AFTER_MS));
    }
    let sender = pool.lock().map_err(|_| ApiError::unknown("the hashing pool failed"))?;
    sender.send((job, waiting)).map_err(|_| ApiError::unknown("the hashing pool stopped"))
}

/// The PHC string of a new hash of `password`.
pub(crate) async fn hash_password(
    password: String,
    salt: [u8; 16],
    queue: &Queue,
) -> Result<String, ApiError> {
    let (reply, answer) = oneshot::channel();
    submit(Job::Hash { password, salt, reply }, queue)?;
    answer
        .await
        .map_err(|_| ApiError::unknown("the hashing thread stopped"))?
        .map_err(|e| ApiError::unknown(format!("hashing the password: {e}")))
}

/// Whether `password` matches `hash`; with no hash, a decoy is checked and the answer is no.
pub(crate) async fn verify_password(
    password: String,
    hash: Option<String>,
    queue: &Queue,
) -> Result<bool, ApiError> {
    let (reply, answer) = oneshot::channel();
    submit(Job::Verify { password, hash, reply }, queue)?;
    answer.await.map_err(|_| ApiError::unknown("the hashing thread stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_older_parameters_still_verify() {
        let mut blocks = Vec::new();
        let phc = hash("hunter2", b"0123456789abcdef", &mut blocks).expect("hashes");
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
        assert!(verify("hunter2", &phc, &mut blocks));
        assert!(!verify("hunter3", &phc, &mut blocks));
        // A hash made by the argon2 crate's own hasher with its defaults (19 MiB, t=2).
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("a salt");
        let default = Argon2::default().hash_password(b"pw", &salt).expect("hashes").to_string();
        assert!(verify("pw", &default, &mut blocks));
        assert!(!verify("px", &default, &mut blocks));
        assert!(!verify("pw", "not a phc string", &mut blocks));
    }
}
