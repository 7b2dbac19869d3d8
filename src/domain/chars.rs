//! Characters that must not appear in names people read: control characters and Unicode
//! format characters (general category Cf: bidi overrides such as U+202E, zero-width spaces
//! and joiners such as U+200B, tag characters). They are invisible or reorder the text around
//! them, so an identity holding one can pass for another one on screen.
//!
//! May depend on: std only.

/// The Cf ("format") ranges of Unicode 15.1, inclusive, in ascending order.
const FORMAT_RANGES: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Whether `c` is a Unicode format character (general category Cf).
pub fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT_RANGES
        .binary_search_by(|&(start, end)| {
            if end < c {
                std::cmp::Ordering::Less
            } else if start > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `c` is a control or format character: one a readable name must not hold.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// The first hidden character of `text`, if any.
pub fn first_hidden(text: &str) -> Option<char> {
    text.chars().find(|&c| is_hidden(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sorted_and_disjoint() {
        for pair in FORMAT_RANGES.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
    }

    #[test]
    fn every_range_boundary_is_a_format_character() {
        for &(start, end) in FORMAT_RANGES {
            for cp in [start, end] {
                let c = char::from_u32(cp).expect("a scalar value");
                assert!(is_format(c), "U+{cp:04X}");
            }
            for cp in [start - 1, end + 1] {
                let c = char::from_u32(cp).expect("a scalar value");
                let inside = FORMAT_RANGES.iter().any(|&(s, e)| (s..=e).contains(&cp));
                assert_eq!(is_format(c), inside, "U+{cp:04X}");
            }
        }
    }

    #[test]
    fn bidi_and_zero_width_characters_are_hidden() {
        for c in [
            '\u{202E}',
            '\u{202A}',
            '\u{200B}',
            '\u{200D}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(is_hidden(c), "U+{:04X}", u32::from(c));
        }
        for c in ['\0', '\n', '\u{7F}', '\u{85}'] {
            assert!(is_hidden(c), "control U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn visible_text_is_not_hidden() {
        let text = "alice@example.com Zoë +1 (555) ☎ 山田 مرحبا 😀 a-b_c.d";
        assert_eq!(first_hidden(text), None);
        for c in [' ', '\u{A0}', '\u{3000}', '\u{1F600}', '\u{FFFD}'] {
            assert!(!is_hidden(c), "U+{:04X}", u32::from(c));
        }
        assert_eq!(first_hidden("ali\u{200B}ce"), Some('\u{200B}'));
    }
}
