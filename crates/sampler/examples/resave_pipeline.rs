//! Loads a Stable-Diffusion-style pipeline folder and writes it again
//! through this toolkit's code (every component's config and weights, the
//! tokenizer files, model_index.json), as a new diffusers folder.
//!
//! ```sh
//! cargo run -p sampler --example resave_pipeline -- crates/sampler/tests/fixtures/sd_tiny/sd2_pipeline /tmp/ours
//! cargo xtask py scripts/gen_sd_pipeline_fixtures.py --check-ours /tmp/ours   # diffusers loads it
//! ```

use sampler::text_to_image::TextToImage;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to] = args.as_slice() else {
        return Err("usage: resave_pipeline FROM_DIR TO_DIR (TO_DIR must not exist)".into());
    };
    let pipe = TextToImage::load(from, tch::Device::Cpu)?;
    pipe.save(to)?;
    println!(
        "wrote {to}: a {} with a {}-parameter U-Net",
        pipe.class_name,
        pipe.unet.num_parameters()
    );
    Ok(())
}
