//! AIP-158 pagination: page sizes with a default and a ceiling, and opaque page
//! tokens that carry the sort key of the last item returned (keyset paging, so
//! a page is stable while rows are inserted).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;

use crate::validate::invalid_field;

/// Page size used when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Larger requests are served this many items.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The effective page size; negative sizes are an error naming `page_size`.
pub fn page_size(requested: i32) -> Result<i64, Status> {
    match requested {
        n if n < 0 => Err(invalid_field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// The opaque token for the next page after an item with this sort key.
pub fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// The sort key inside a token; `None` for the first page (empty token).
pub fn decode_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| invalid_field("page_token", "is not a token returned by this API"))
}

/// Trims a page fetched with `size + 1` rows to `size` and returns the
/// token of the next page (empty when this was the last), made from the
/// last item's sort key.
pub fn next_page<T>(items: &mut Vec<T>, size: i64, key: impl Fn(&T) -> String) -> String {
    let size = usize::try_from(size).unwrap_or(0);
    if items.len() <= size {
        return String::new();
    }
    items.truncate(size);
    items
        .last()
        .map(|item| encode_token(&key(item)))
        .unwrap_or_default()
}

/// The key of a (time, id) position, written as `time:id`.
pub fn time_id_key(time: i64, id: &str) -> String {
    format!("{time}:{id}")
}

/// A (time, id) position from a token made with [`time_id_key`].
pub fn decode_time_id(token: &str) -> Result<Option<(i64, String)>, Status> {
    let Some(key) = decode_token(token)? else {
        return Ok(None);
    };
    key.split_once(':')
        .and_then(|(time, id)| {
            Some((time.parse::<i64>().ok()?, id.to_owned())).filter(|(_, id)| !id.is_empty())
        })
        .map(Some)
        .ok_or_else(|| invalid_field("page_token", "is not a token returned by this API"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_clamps_and_rejects_negative() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(50_000).ok(), Some(MAX_PAGE_SIZE));
        let err = page_size(-1).expect_err("negative");
        assert!(err.message().contains("page_size"));
    }

    #[test]
    fn next_page_trims_and_points_past_the_last_item() {
        let mut items = vec![1, 2, 3];
        let token = next_page(&mut items, 2, |i| i.to_string());
        assert_eq!(items, [1, 2]);
        assert_eq!(decode_token(&token).ok().flatten().as_deref(), Some("2"));
        let mut last = vec![1, 2];
        assert_eq!(next_page(&mut last, 2, |i| i.to_string()), "");
        assert_eq!(last, [1, 2]);
    }

    #[test]
    fn time_id_positions_round_trip_and_reject_malformed_keys() {
        let token = encode_token(&time_id_key(17, "a:b"));
        assert_eq!(
            decode_time_id(&token).ok().flatten(),
            Some((17, "a:b".to_owned()))
        );
        for key in ["no-colon", "soon:x", "17:"] {
            assert!(decode_time_id(&encode_token(key)).is_err(), "{key}");
        }
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let token = encode_token("1700000000:order-1");
        assert_eq!(
            decode_token(&token).ok().flatten().as_deref(),
            Some("1700000000:order-1")
        );
        assert_eq!(decode_token("").ok(), Some(None));
        let err = decode_token("%%%").expect_err("garbage");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("page_token"));
    }
}
