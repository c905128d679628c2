//! One Identity Center user, however a source spells the id.
//!
//! The bill names a user as `arn:aws:identitystore::<account>:user/<id>` (the allocation keeps
//! what follows `user/`, as the SQL template does). The Kiro activity report writes the bare id
//! or `d-<identity store>.<id>` (shared/facts: two public sources show that form), sometimes
//! quoted. Identity Store ids may start with the store's own ten-digit prefix
//! (`<store>-<uuid>`, the id's documented pattern `([0-9a-f]{10}-|)<uuid>`). [`canonical`]
//! removes what is never part of the id; [`join_key`] is what two spellings of one user meet on.

/// The id without quotes, an ARN's `…user/` part or a `d-<store>.` prefix.
pub fn canonical(id: &str) -> &str {
    let id = id.trim().trim_matches(|c| c == '"' || c == '\'').trim();
    let id = match id.find("user/") {
        Some(i) => &id[i + 5..],
        None => id,
    };
    match id.strip_prefix("d-").and_then(|rest| rest.split_once('.')) {
        Some((store, rest)) if is_hex(store) && !rest.is_empty() => rest,
        _ => id,
    }
}

/// The key two spellings of one user meet on: [`canonical`], without a store's `<10 hex>-`
/// prefix before a UUID, in lower case.
pub fn join_key(id: &str) -> String {
    join_key_of(id).into_owned()
}

/// [`join_key`], borrowed from `id` where it is already in lower case.
pub fn join_key_of(id: &str) -> std::borrow::Cow<'_, str> {
    // Lower-case hexadecimal digits and dashes (as the bill writes most ids) are canonical
    // already: no quote, space, `user/` or `d-<store>.` prefix can be among them.
    let plain = id
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'));
    let id = if plain { id } else { canonical(id) };
    let id = match id.split_once('-') {
        Some((store, rest)) if store.len() == 10 && is_hex(store) && is_uuid(rest) => rest,
        _ => id,
    };
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(id.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `8-4-4-4-12` hexadecimal digits: 36 bytes, dashes at 8, 13, 18 and 23 and hexadecimal
/// digits everywhere else.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "94482488-3041-7026-18f3-be45837cd0e4";

    #[test]
    fn every_spelling_of_one_user_meets_on_one_key() {
        for spelling in [
            UUID.to_owned(),
            format!("\"{UUID}\""),
            format!(" '{UUID}' "),
            format!("d-9067640ef1.{UUID}"),
            format!("arn:aws:identitystore::123456789012:user/{UUID}"),
            format!("arn:aws:identitystore:::user/{UUID}"),
            format!("9067640ef1-{UUID}"),
            UUID.to_ascii_uppercase(),
        ] {
            assert_eq!(join_key(&spelling), UUID, "{spelling}");
        }
    }

    /// The byte rule of [`is_uuid`] is the `8-4-4-4-12` rule on parts split at dashes.
    #[test]
    fn uuid_by_bytes_is_uuid_by_parts() {
        let by_parts = |s: &str| {
            let mut parts = s.split('-');
            [8, 4, 4, 4, 12]
                .iter()
                .all(|&n| parts.next().is_some_and(|p| p.len() == n && is_hex(p)))
                && parts.next().is_none()
        };
        let mut cases = vec![
            UUID.to_owned(),
            UUID.to_uppercase(),
            String::new(),
            "-".repeat(36),
            format!("{UUID}-"),
            format!("-{UUID}"),
            UUID[1..].to_owned(),
            format!("{UUID}0"),
            UUID.replace('-', ""),
            "94482488-3041-7026-18f3be45-837cd0e4".to_owned(),
            "94482488-3041-7026-18f3-be45837cd0eg".to_owned(),
            "94482488+3041-7026-18f3-be45837cd0e4".to_owned(),
        ];
        // Every byte of the UUID in turn made a dash, a letter beyond f and a multi-byte
        // character.
        for i in 0..UUID.len() {
            for c in ["-", "g", "é"] {
                let mut s = UUID.to_owned();
                s.replace_range(i..=i, c);
                cases.push(s);
            }
        }
        for s in &cases {
            assert_eq!(is_uuid(s), by_parts(s), "{s:?}");
        }
        assert!(is_uuid(UUID));
    }

    #[test]
    fn canonical_keeps_what_may_be_part_of_the_id() {
        assert_eq!(canonical(&format!("d-9067640ef1.{UUID}")), UUID);
        // The store's own prefix is part of some stores' ids: kept.
        assert_eq!(
            canonical(&format!("9067640ef1-{UUID}")),
            format!("9067640ef1-{UUID}")
        );
        // Ids of other shapes pass as they are.
        for id in ["u1", "alice", "d-x.y", "d-12ab.", "carol.smith"] {
            assert_eq!(canonical(id), id);
        }
        assert_eq!(join_key("Alice"), "alice");
        // Not a UUID after the prefix: nothing stripped.
        assert_eq!(join_key("9067640ef1-abc"), "9067640ef1-abc");
    }
}
