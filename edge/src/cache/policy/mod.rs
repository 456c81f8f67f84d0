//! Pure HTTP caching policy for a shared cache.
//!
//! RFC 9111 (storage, freshness, age, validation, invalidation), RFC 5861
//! (`stale-while-revalidate`, `stale-if-error`) and RFC 9110 13 (conditional requests). No I/O
//! and no clock: callers pass `now`. Header parsing is tolerant: malformed values never panic
//! and are read in the direction that serves fewer or older responses from cache.
//!
//! - `cache_control.rs`: Cache-Control parsing ([`CacheControl`]);
//! - `storable.rs`: may a response be stored at all ([`storable`], [`NotStorable`]);
//! - `freshness.rs`: lifetime, age and the stale rules ([`StoredFacts`], [`Freshness`]);
//! - `vary.rs`: Vary and the secondary key it makes ([`vary`], [`vary_key`]);
//! - `validation.rs`: revalidation with the origin and client conditionals
//!   ([`merge_not_modified`], [`evaluate_conditional`]);
//! - `invalidation.rs`: what an unsafe method invalidates ([`invalidation_targets`]);
//! - `fields.rs`: list-valued fields and HTTP-dates, shared by the rest.

mod cache_control;
mod fields;
mod freshness;
mod invalidation;
mod storable;
#[cfg(test)]
mod tests;
mod validation;
mod vary;

use http::Method;

pub use self::cache_control::CacheControl;
pub use self::fields::list_members;
pub use self::freshness::{
    Freshness, PolicyConfig, StoredFacts, current_age, freshness, freshness_lifetime,
    stored_freshness, stored_freshness_until,
};
pub use self::invalidation::{invalidates, invalidation_targets};
pub use self::storable::{NotStorable, heuristically_cacheable, storable, understood_status};
pub use self::validation::{
    Conditional, evaluate_conditional, merge_not_modified, not_modified_matches,
    not_modified_selects, validation_headers,
};
pub use self::vary::{Vary, vary, vary_key};

/// Whether a request may be answered from cache at all; other methods bypass the cache.
pub fn cacheable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}
