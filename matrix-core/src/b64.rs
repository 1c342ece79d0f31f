//! Unpadded base64 as Matrix uses it.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const ENCODE: GeneralPurposeConfig = GeneralPurposeConfig::new().with_encode_padding(false);
const DECODE: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);

const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ENCODE);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ENCODE);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, DECODE);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, DECODE);

/// Standard-alphabet unpadded base64 (hashes, signatures, keys).
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// URL-safe unpadded base64 (event ids from room version 4).
pub fn encode_url_safe(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE.encode(bytes)
}

/// Decodes base64 as servers send it: either alphabet, padded or not, with or without
/// non-zero trailing bits (the spec's own test seed has them).
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD_LENIENT.decode(text).or_else(|_| URL_SAFE_LENIENT.decode(text))
}

/// Decodes into a fixed-size array; `None` if the text is not base64 of exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Base64 of N bytes is at most 4 * ceil(N / 3) characters; refuse longer input early.
    if text.len() > N.div_ceil(3) * 4 {
        return None;
    }
    decode(text).ok()?.try_into().ok()
}
