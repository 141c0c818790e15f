//! A listing route's query parameters: only the names it takes, empty values as absent, numbers
//! in their range; each refusal a 400 naming the parameter.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use crate::error::ApiError;

/// Most items a listing page holds.
pub const MAX_PAGE: u32 = 1000;

/// The query of one request, checked against the names its route takes.
pub struct Params(HashMap<String, String>);

impl Params {
    /// `q`, when it names nothing but `names`.
    pub fn only(q: HashMap<String, String>, names: &[&str]) -> Result<Params, ApiError> {
        if let Some(k) = q.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(ApiError::bad_param(k, format!("unknown query parameter {k:?}")));
        }
        Ok(Params(q))
    }

    /// `k`'s value; an empty one counts as absent.
    pub fn text(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// `k` as a whole number in `range`, else 400 saying `why`.
    pub fn number(&self, k: &str, range: RangeInclusive<u32>, why: &str) -> Result<Option<u32>, ApiError> {
        self.text(k)
            .map(|s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| ApiError::bad_param(k, why))
            })
            .transpose()
    }

    /// `limit`: a page size from 1 to [`MAX_PAGE`], `default` when absent.
    pub fn limit(&self, default: u32) -> Result<u32, ApiError> {
        let why = format!("limit must be a whole number from 1 to {MAX_PAGE}");
        Ok(self.number("limit", 1..=MAX_PAGE, &why)?.unwrap_or(default))
    }
}
