//! Replies that repeat a client's own text (an event name, a namespace, a value a parser quotes)
//! repeat only its start, so that no reply can be made much larger than what provoked it. A leaf:
//! the protocol and the core both use it.

// Input from the network reaches these parsers: an index or a string cut at an unchecked offset
// could panic a connection (`4é` did), so neither is allowed outside tests.
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

/// How much of a client's own text (an event name, a namespace, a value quoted in a parser's
/// message) a reply repeats back: enough to recognise it, never enough to make a reply larger
/// than what provoked it by more than a few bytes.
pub(crate) const ECHO_BYTES: usize = 64;

/// The first [`ECHO_BYTES`] bytes of `text`, cut at a character boundary.
pub(crate) fn clip(text: &str) -> &str {
    clip_to(text, ECHO_BYTES)
}

/// The first `max` bytes of `text` at most, cut at a character boundary.
pub(crate) fn clip_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    text.get(..text.floor_char_boundary(max))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_cut_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(100);
        let cut = clip(&long);
        assert_eq!(cut.len(), 64);
        assert!(long.starts_with(cut));
        assert_eq!(clip_to("aé", 2), "a");
    }
}
