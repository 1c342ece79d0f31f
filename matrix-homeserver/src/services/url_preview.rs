//! URL previews: a page's OpenGraph metadata ([`opengraph`]), with its image fetched and kept
//! as our media (an `mxc://` URI), or an image URL's own description; fetched safely
//! ([`fetch`]: the IP blocklist after DNS and on every redirect, size and time bounds) and
//! kept in a bounded cache by URL.
//!
//! The answer is Synapse's: `og:*` keys with string values, and for an image `og:image`
//! (our `mxc://` URI), `og:image:type`, `og:image:width`, `og:image:height` (numbers, read
//! from the image itself) and `matrix:image:size`. An image that cannot be fetched, is not
//! PNG, JPEG, GIF or WebP, or does not decode, is left out and the rest answered. The image
//! is stored as media uploaded by the user who asked first (within their quota).

pub(crate) mod fetch;
pub(crate) mod opengraph;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;
use url::Url;

use crate::config::UrlPreviewConfig;
use crate::error::ApiError;
use crate::services::media::Media;
use fetch::{FetchError, Fetcher, HostResolver};

/// Image types re-hosted (the ones media thumbnails read).
const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
/// How long storing a fetched image (already in memory) may take.
const IMAGE_STORE_TIMEOUT: Duration = Duration::from_secs(30);

fn is_html(media_type: &str) -> bool {
    matches!(media_type, "text/html" | "application/xhtml+xml")
}

fn is_image(media_type: &str) -> bool {
    IMAGE_TYPES.contains(&media_type)
}

/// A cached preview and when it was made.
#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    preview: Arc<Value>,
    /// Its JSON's length.
    json_bytes: u64,
}

/// What a preview costs the cache: its URL, and about twice its JSON (the parsed tree keeps
/// every key and string apart), so that the cache is bounded in bytes whatever pages say.
#[derive(Debug, Clone, Copy)]
struct PreviewWeight;

impl quick_cache::Weighter<String, Cached> for PreviewWeight {
    fn weight(&self, url: &String, cached: &Cached) -> u64 {
        (url.len() as u64).saturating_add(cached.json_bytes.saturating_mul(2)).saturating_add(128)
    }
}

/// The URL preview service (present only when previews are enabled).
#[derive(Debug)]
pub(crate) struct UrlPreviews {
    config: Arc<UrlPreviewConfig>,
    fetcher: Fetcher,
    cache: quick_cache::sync::Cache<String, Cached, PreviewWeight>,
    /// Fetches running at once, server-wide.
    gate: tokio::sync::Semaphore,
}

/// Where a preview's image is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageStore<'a> {
    pub(crate) media: &'a Media,
    pub(crate) server_name: &'a str,
    /// The largest media file accepted.
    pub(crate) max_media_bytes: usize,
}

impl UrlPreviews {
    /// The service, resolving names with `resolver`.
    pub(crate) fn new(
        config: &UrlPreviewConfig,
        resolver: Arc<dyn HostResolver>,
    ) -> Result<Self, fetch::BuildError> {
        let config = Arc::new(config.clone());
        let fetcher = Fetcher::new(config.clone(), resolver)?;
        Ok(UrlPreviews {
            cache: quick_cache::sync::Cache::with_weighter(
                1024,
                config.cache_bytes.max(1),
                PreviewWeight,
            ),
            gate: tokio::sync::Semaphore::new(config.max_concurrent_fetches.max(1)),
            fetcher,
            config,
        })
    }

    /// The preview of `url` for `user`: from the cache while it is fresh, else fetched.
    pub(crate) async fn preview(
        &self,
        url: &str,
        user: &str,
        store: ImageStore<'_>,
    ) -> Result<Value, ApiError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            let reason = "only http and https URLs are previewed";
            return Err(FetchError::InvalidUrl(reason.to_owned()).into());
        }
        url.set_fragment(None);
        let key = url.as_str().to_owned();
        let fresh = Duration::from_secs(self.config.cache_secs);
        if let Some(cached) = self.cache.get(&key)
            && cached.at.elapsed() < fresh
        {
            return Ok((*cached.preview).clone());
        }
        let Ok(_permit) = self.gate.try_acquire() else {
            return Err(ApiError::limit_exceeded_with(
                1000,
                "too many URL previews are being fetched; try again shortly",
            ));
        };
        let deadline = Instant::now() + Duration::from_secs(self.config.timeout_secs);
        let preview = self.fetch(url, user, store, deadline).await?;
        let preview = Value::Object(preview);
        let json_bytes = preview.to_string().len() as u64;
        let cached = Cached { at: Instant::now(), preview: Arc::new(preview.clone()), json_bytes };
        self.cache.insert(key, cached);
        Ok(preview)
    }

    async fn fetch(
        &self,
        url: Url,
        user: &str,
        store: ImageStore<'_>,
        deadline: Instant,
    ) -> Result<Map<String, Value>, FetchError> {
        let accept = |t: &str| is_html(t) || is_image(t);
        let max = self.config.max_response_bytes;
        let fetched = self.fetcher.fetch(url, accept, max, deadline).await?;
        if is_image(&fetched.media_type) {
            return Ok(self.keep_image(fetched, user, store).await.unwrap_or_default());
        }
        let page = opengraph::parse(&fetched.body, &fetched.content_type, &fetched.url);
        drop(fetched);
        let mut fields = page.fields;
        if let Some(image) = page.image {
            let max = max.min(store.max_media_bytes);
            // The page is answered without its image if the image fails.
            if let Ok(fetched) = self.fetcher.fetch(image, is_image, max, deadline).await
                && let Some(described) = self.keep_image(fetched, user, store).await
            {
                fields.extend(described);
            }
        }
        Ok(fields)
    }

    /// Stores a fetched image as `user`'s media; answers its description, or `None` if it is
    /// not an image that decodes or cannot be stored.
    async fn keep_image(
        &self,
        fetched: fetch::Fetched,
        user: &str,
        store: ImageStore<'_>,
    ) -> Option<Map<String, Value>> {
        if fetched.body.len() > store.max_media_bytes {
            return None;
        }
        // What it is and its size, from the bytes (the header may lie).
        let reader = image::ImageReader::new(std::io::Cursor::new(&fetched.body[..]))
            .with_guessed_format()
            .ok()?;
        let media_type = reader.format()?.to_mime_type();
        if !is_image(media_type) {
            return None;
        }
        let (width, height) = reader.into_dimensions().ok()?;
        let size = fetched.body.len();
        let id = store
            .media
            .upload(
                user,
                None,
                Some(media_type.to_owned()),
                None,
                Some(size as u64),
                axum::body::Body::from(fetched.body),
                IMAGE_STORE_TIMEOUT,
            )
            .await
            .ok()?;
        let described = json!({
            "og:image": format!("mxc://{}/{id}", store.server_name),
            "og:image:type": media_type,
            "og:image:width": width,
            "og:image:height": height,
            "matrix:image:size": size,
        });
        match described {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }
}
