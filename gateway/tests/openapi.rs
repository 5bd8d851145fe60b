//! The generated `/openapi.json` checked by a standard validator
//! (`openapi-spec-validator` from PyPI, installed by `.ci/tools.sh` into
//! `target/tools`; elsewhere the path in `OPENAPI_SPEC_VALIDATOR`). Without
//! it the test is skipped, except under CI where it fails.

use std::path::PathBuf;
use std::process::Command;

use ordermesh_gateway::openapi;

fn validator() -> Option<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/openapi-spec-validator");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("OPENAPI_SPEC_VALIDATOR")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
}

#[test]
fn the_document_passes_openapi_spec_validator() {
    let Some(validator) = validator() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "openapi-spec-validator is missing (run .ci/tools.sh)"
        );
        eprintln!("skipped: no openapi-spec-validator in target/tools/bin or $OPENAPI_SPEC_VALIDATOR");
        return;
    };
    let document = openapi::built_in_document();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).expect("serializes"))
        .expect("writes the document");
    let output = Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("runs {}: {e}", validator.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the validator rejects the document:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("OK"),
        "unexpected validator output:\n{stdout}\n{stderr}"
    );
}
