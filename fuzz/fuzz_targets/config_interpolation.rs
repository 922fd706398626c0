//! Any environment value in every TOML context: lands verbatim, or is
//! refused; the document around it never changes.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use ww_config::interpolate::interpolate;

fuzz_target!(|value: &str| {
    let env = HashMap::from([("V".to_string(), value.to_string())]);
    for template in ["a = \"${V}\"\nsentinel = 1\n", "a = '${V}'\nsentinel = 1\n", "a = ${V}\nsentinel = 1\n"] {
        if let Ok(text) = interpolate(template, &env)
            && let Ok(table) = text.parse::<toml::Table>()
        {
            assert_eq!(table.len(), 2, "{template:?} with {value:?} gave {text:?}");
            if template.contains('"') || template.contains('\'') {
                assert_eq!(table["a"].as_str(), Some(value));
            }
        }
    }
    // The whole loader, with the value as the configuration text itself.
    let _ = ww_config::load_str(value, &HashMap::new());
});
