from PIL import Image
from skimage.data import astronaut  # any photo: a path, a PIL image, a numpy array or a tensor

from vision_tokenizers.playground import TokenizerPlayground

playground = TokenizerPlayground(device="cpu")  # "cuda" on a GPU
playground.load("taef2_512")  # weights from $VTOK_WEIGHTS or model_weights/, else downloaded

image = Image.fromarray(astronaut())
tokens = playground.encode(image)  # one image's tokens: ids, or latents (here 32x64x64)
reconstructed = playground.decode(tokens)  # a PIL image at the tokenizer's resolution
reconstructed.save("astronaut_taef2.png")

info = playground.info()
print(f"Tokens: {info['num_tokens']}, Codebook: {info['codebook_size']}, bits/pixel: {info['bits_per_pixel']}")

result = playground.measure(image)  # the benchmark's per-image metrics for this image
print(f"PSNR {result.metrics['psnr']:.2f} dB, SSIM {result.metrics['ssim']:.4f}")
