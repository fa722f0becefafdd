//! Datasets, preprocessing and batching for diffusion training.
//!
//! Status: skeleton. This crate will read image folders, IDX files (MNIST,
//! Fashion-MNIST), CIFAR-10 batches and the bundled default set, preprocess
//! them (resize, crop, flip, channel conversion, scaling to [-1, 1]) and batch
//! them in parallel with exact resume. Nothing is implemented yet; images are
//! already read by `tensor::image`.
