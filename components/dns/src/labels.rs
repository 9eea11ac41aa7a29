//! DNS label sanitising exactly as Mesos-DNS does it (`records/labels`), plus the task-name
//! hash used in canonical task names.
//!
//! A label keeps `a-z0-9`, maps `A-Z` to lower case and `-`, `.`, `_` to `-`, drops every other
//! character, then trims: leading characters of the "left cutset" and trailing `-`, and cuts to
//! the maximum length (trimming a trailing `-` the cut may expose).

/// Which hostname rules labels follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelSpec {
    /// RFC 1123: up to 63 characters, may start with a digit.
    #[default]
    Rfc1123,
    /// RFC 952: up to 24 characters, must start with a letter.
    Rfc952,
}

impl LabelSpec {
    fn max_len(self) -> usize {
        match self {
            LabelSpec::Rfc1123 => 63,
            LabelSpec::Rfc952 => 24,
        }
    }

    fn trims_left(self, c: char) -> bool {
        match self {
            LabelSpec::Rfc1123 => c == '-',
            LabelSpec::Rfc952 => c == '-' || c.is_ascii_digit(),
        }
    }

    /// Sanitises one label.
    pub fn label(self, raw: &str) -> String {
        let mapped: String = raw
            .chars()
            .filter_map(|c| match c {
                'a'..='z' | '0'..='9' => Some(c),
                'A'..='Z' => Some(c.to_ascii_lowercase()),
                '-' | '.' | '_' => Some('-'),
                _ => None,
            })
            .collect();
        let trimmed = mapped.trim_start_matches(|c| self.trims_left(c));
        let cut: String = trimmed.chars().take(self.max_len()).collect();
        cut.trim_end_matches('-').to_owned()
    }

    /// Sanitises every dot-separated part of `raw` and joins them with dots again
    /// (`marathon.prod` stays two labels); empty parts are dropped.
    pub fn domain_frag(self, raw: &str) -> String {
        raw.split('.')
            .map(|part| self.label(part))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// The z-base-32 alphabet (used by Mesos-DNS for the task-id hash).
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// First five characters of the z-base-32 encoding of SHA-1(`task_id`).
pub fn task_hash(task_id: &str) -> String {
    let digest = sha1(task_id.as_bytes());
    zbase32(&digest).chars().take(5).collect()
}

/// z-base-32 encoding: 5-bit groups, most significant bit first, no padding.
pub fn zbase32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ZBASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ZBASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// SHA-1 (FIPS 180-4). Only used to name tasks, never for security.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_matches_the_standard_test_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha1(&million)),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn zbase32_encodes_bits_most_significant_first() {
        // 0x00 -> 00000 000(00) -> "yy"; 0xff -> 11111 111(00) -> "9" + index 28 = 'h'
        assert_eq!(zbase32(&[0x00]), "yy");
        assert_eq!(zbase32(&[0xff]), "9h");
        assert_eq!(zbase32(&[0xf0, 0xbf, 0xc7]), "6n9hq");
        assert_eq!(task_hash("x").len(), 5);
    }

    #[test]
    fn labels_are_sanitised_like_mesos_dns() {
        let table = [
            (
                LabelSpec::Rfc1123,
                "apiserver.myservice",
                "apiserver-myservice",
            ),
            (LabelSpec::Rfc1123, "My_Task", "my-task"),
            (LabelSpec::Rfc1123, "--web--", "web"),
            (LabelSpec::Rfc1123, "a!b@c#", "abc"),
            (LabelSpec::Rfc1123, "9lives", "9lives"),
            (LabelSpec::Rfc952, "9lives", "lives"),
            (LabelSpec::Rfc952, "-1-2-abc", "abc"),
            (LabelSpec::Rfc1123, "ünïcode", "ncode"),
            (LabelSpec::Rfc1123, "", ""),
            (
                LabelSpec::Rfc952,
                "abcdefghijklmnopqrstuvw-yz",
                "abcdefghijklmnopqrstuvw",
            ),
        ];
        for (spec, raw, want) in table {
            assert_eq!(spec.label(raw), want, "{spec:?} {raw:?}");
        }
        assert_eq!(LabelSpec::Rfc1123.label(&"x".repeat(100)).len(), 63);
        assert_eq!(
            LabelSpec::Rfc1123.domain_frag("Marathon.Prod"),
            "marathon.prod"
        );
        assert_eq!(LabelSpec::Rfc1123.domain_frag("a..b"), "a.b");
    }

    proptest! {
        #[test]
        fn sanitised_labels_are_always_valid(raw in ".{0,100}", rfc952 in any::<bool>()) {
            let spec = if rfc952 { LabelSpec::Rfc952 } else { LabelSpec::Rfc1123 };
            let l = spec.label(&raw);
            prop_assert!(l.len() <= spec.max_len());
            prop_assert!(l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            prop_assert!(!l.starts_with('-') && !l.ends_with('-'));
            if rfc952 { prop_assert!(!l.starts_with(|c: char| c.is_ascii_digit())); }
        }
    }
}
