use bencode::{decode, decode_strict, Owned};
use proptest::prelude::*;

fn owned() -> impl Strategy<Value = Owned> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Owned::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Owned::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Owned::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..8
            )
            .prop_map(Owned::Dict),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(value in owned()) {
        let bytes = value.encode();
        let decoded = decode_strict(&bytes).expect("canonical encoding must decode strictly");
        prop_assert_eq!(decoded.raw(), &bytes[..]);
        prop_assert_eq!(decoded.to_owned_value(), value);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = decode_strict(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_valid_input(value in owned(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = value.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(v) = decode(&bytes) {
            // Whatever decodes must re-span the whole input.
            prop_assert_eq!(v.raw().len(), bytes.len());
        }
    }

    #[test]
    fn truncation_is_always_an_error(value in owned(), cut in any::<prop::sample::Index>()) {
        let bytes = value.encode();
        let n = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..n]).is_err());
    }
}
