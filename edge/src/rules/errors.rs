//! Custom error pages: an origin's 5xx (or the edge's own 502/504 when the origin fails) is
//! answered with a static file from config, under the same status.

use std::path::PathBuf;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{RuleError, invalid};
use crate::body::{self, Body};
use crate::filter::{Filter, Phases, RequestInfo};
use crate::sites::Site;

/// Largest error page: it is held in memory and sent whole.
const MAX_PAGE: u64 = 1 << 20;

/// One error page of a site.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorPage {
    /// The statuses it replaces the body of (500–599).
    pub status: Vec<u16>,
    /// The page, read when the config is loaded or reloaded (at most 1 MiB).
    pub file: PathBuf,
    /// Its Content-Type (default, `"auto"`: from the file name: .html, .json, .txt, else
    /// text/html).
    #[serde(default, with = "crate::config::unset::auto")]
    pub content_type: Option<String>,
}

struct Page {
    status: Vec<StatusCode>,
    body: Bytes,
    content_type: HeaderValue,
}

/// The site's error pages, loaded.
pub struct ErrorPages {
    pages: Vec<Page>,
}

impl ErrorPages {
    pub fn load(pages: &[ErrorPage]) -> Result<Option<Self>, RuleError> {
        if pages.is_empty() {
            return Ok(None);
        }
        let mut loaded = Vec::with_capacity(pages.len());
        for (i, page) in pages.iter().enumerate() {
            let at = format!("error_page {} ({})", i + 1, page.file.display());
            let status = page
                .status
                .iter()
                .map(|c| match StatusCode::from_u16(*c) {
                    Ok(s) if s.is_server_error() => Ok(s),
                    _ => Err(invalid(
                        &at,
                        format!("status {c}: only 500-599 have error pages"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if status.is_empty() {
                return Err(invalid(&at, "`status` is empty"));
            }
            let size = std::fs::metadata(&page.file)
                .map_err(|e| invalid(&at, format!("cannot read the file: {e}")))?
                .len();
            if size > MAX_PAGE {
                return Err(invalid(
                    &at,
                    format!("{size} bytes: an error page is at most 1 MiB"),
                ));
            }
            let body = std::fs::read(&page.file)
                .map_err(|e| invalid(&at, format!("cannot read the file: {e}")))?;
            let content_type = page.content_type.clone().unwrap_or_else(|| {
                let ext = page.file.extension().and_then(|e| e.to_str()).unwrap_or("");
                match ext {
                    "json" => "application/json",
                    "txt" => "text/plain; charset=utf-8",
                    _ => "text/html; charset=utf-8",
                }
                .to_owned()
            });
            let content_type = HeaderValue::from_str(&content_type)
                .map_err(|_| invalid(&at, "content_type is not a header value"))?;
            loaded.push(Page {
                status,
                body: Bytes::from(body),
                content_type,
            });
        }
        Ok(Some(Self { pages: loaded }))
    }
}

impl Filter for ErrorPages {
    fn name(&self) -> &'static str {
        "error-pages"
    }

    fn phases(&self) -> Phases {
        Phases::ON_RESPONSE
    }

    fn on_response(&self, _: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        let status = response.status();
        let Some(page) = self.pages.iter().find(|p| p.status.contains(&status)) else {
            return;
        };
        let h = response.headers_mut();
        // The page replaces the body: nothing that described the old one may stay.
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::CONTENT_RANGE,
            header::ETAG,
            header::LAST_MODIFIED,
        ] {
            h.remove(name);
        }
        h.insert(header::CONTENT_TYPE, page.content_type.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        *response.body_mut() = body::full(page.body.clone());
    }
}
