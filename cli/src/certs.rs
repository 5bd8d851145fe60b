//! `ordermesh certs`: a development CA and one certificate per kind of
//! process, for trying mutual TLS locally (`serve --tls-cert ...`) or
//! filling the chart's Secrets. Production clusters issue them from their
//! own PKI or cert-manager instead (docs/security.md).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt and <name>.crt / <name>.key into (created
    /// if missing; keys are mode 0600). Existing files are overwritten.
    #[arg(long, default_value = "./certs")]
    pub out: PathBuf,
}

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let written = ordermesh_mesh::tls::mint::development(&args.out)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
