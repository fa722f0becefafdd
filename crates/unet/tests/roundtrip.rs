//! Saving: our folders are diffusers' layout and load back bit-exactly.
//! (That diffusers loads them and agrees is checked by
//! `scripts/gen_unet_fixtures.py --check-ours`, see the crate's examples.)

mod common;

use common::{case_dir, case_io};
use tch::{Device, Tensor};
use unet::{UNet, UNetConfig};

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.detach().contiguous();
    let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut v, t.numel());
    v
}

fn assert_bit_exact(a: &UNet, b: &UNet) {
    let (sa, sb) = (a.state_dict(), b.state_dict());
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, v) in &sa {
        assert_eq!(v.kind(), sb[k].kind(), "{k}");
        assert_eq!(bytes(v), bytes(&sb[k]), "{k}");
    }
    // saving adds diffusers' bookkeeping keys, nothing else
    let strip = |c: &UNetConfig| {
        let mut c = c.clone();
        c.extra.remove("_class_name");
        c.extra.remove("_diffusers_version");
        c
    };
    assert_eq!(strip(a.config()), strip(b.config()));
    assert_eq!(b.config().extra["_class_name"], "UNet2DModel");
}

#[test]
fn save_then_load_is_bit_exact() {
    tensor::seed::seed_everything(3);
    let fourier = UNetConfig {
        time_embedding_type: "fourier".into(),
        ..UNetConfig::tiny()
    };
    for config in [UNetConfig::tiny(), fourier] {
        let unet = UNet::new(&config, Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        unet.save(dir.path()).unwrap();
        let back = UNet::load(dir.path(), Device::Cpu).unwrap();
        assert_bit_exact(&unet, &back);
        // only the two files, no temporaries left behind
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["config.json", "diffusion_pytorch_model.safetensors"]
        );
        let (h, w) = config.sample_hw().unwrap();
        let x = Tensor::randn([2, 1, h, w], (tch::Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[1i64, 500]);
        let (a, b) = tch::no_grad(|| {
            (
                unet.forward(&x, &t, None).unwrap(),
                back.forward(&x, &t, None).unwrap(),
            )
        });
        assert_eq!(bytes(&a), bytes(&b));
    }
}

#[test]
fn a_loaded_diffusers_folder_saves_back_unchanged() {
    let case = "classcond_rgb32_scale_shift";
    let unet = UNet::load(case_dir(case), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    unet.save(dir.path()).unwrap();
    let back = UNet::load(dir.path(), Device::Cpu).unwrap();
    assert_bit_exact(&unet, &back);
    let io = case_io(case);
    let run = |u: &UNet| {
        tch::no_grad(|| u.forward(&io["sample"], &io["timesteps"], io.get("class_labels"))).unwrap()
    };
    assert_eq!(bytes(&run(&unet)), bytes(&run(&back)));

    // the file holds exactly diffusers' tensors, byte for byte
    let original = tensor::safetensors::load(
        case_dir(case).join("diffusion_pytorch_model.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    let saved = tensor::safetensors::load(
        dir.path().join("diffusion_pytorch_model.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        saved.keys().collect::<Vec<_>>()
    );
    for (k, v) in &original {
        assert_eq!(bytes(v), bytes(&saved[k]), "{k}");
    }
    // and the config keeps diffusers' keys and values
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir(case).join("config.json")).unwrap())
            .unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    for (key, value) in a.as_object().unwrap() {
        let ours = &b[key];
        let equal = match (value.as_f64(), ours.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => value == ours,
        };
        assert!(equal, "{key}: {value} became {ours}");
    }
}

#[test]
fn saved_config_has_the_diffusers_keys() {
    let unet = UNet::new(&UNetConfig::tiny(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    unet.save(dir.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["_class_name"], "UNet2DModel");
    assert_eq!(config["_diffusers_version"], unet::DIFFUSERS_VERSION);
    // every argument of diffusers 0.42.1 UNet2DModel.__init__
    for key in [
        "sample_size",
        "in_channels",
        "out_channels",
        "center_input_sample",
        "time_embedding_type",
        "time_embedding_dim",
        "freq_shift",
        "flip_sin_to_cos",
        "down_block_types",
        "mid_block_type",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "mid_block_scale_factor",
        "downsample_padding",
        "downsample_type",
        "upsample_type",
        "dropout",
        "act_fn",
        "attention_head_dim",
        "norm_num_groups",
        "attn_norm_num_groups",
        "norm_eps",
        "resnet_time_scale_shift",
        "add_attention",
        "class_embed_type",
        "num_class_embeds",
        "num_train_timesteps",
    ] {
        assert!(config.get(key).is_some(), "config.json lacks {key}");
    }
    assert_eq!(config.as_object().unwrap().len(), 30);
    let (st, meta) = tensor::safetensors::load_with_metadata(
        dir.path().join("diffusion_pytorch_model.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    assert!(st.contains_key("down_blocks.1.attentions.0.to_out.0.weight"));
}
