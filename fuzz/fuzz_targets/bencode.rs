#![no_main]
//! Any input either fails with an error or decodes to a value whose raw span is the whole input and
//! whose canonical re-encoding decodes strictly to the same tree.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = bencode::decode(data) {
        assert_eq!(value.raw(), data);
        let owned = value.to_owned_value();
        let canonical = owned.encode();
        let again = bencode::decode_strict(&canonical).expect("canonical output must decode strictly");
        assert_eq!(again.to_owned_value(), owned);
        if value.raw() == canonical.as_slice() {
            assert!(bencode::decode_strict(data).is_ok());
        }
    }
});
