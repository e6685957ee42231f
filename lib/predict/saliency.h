#pragma once
// Saliency maps: which pixels of the model input drove the predicted class.
//
// Gradient x input: for the predicted class c, map(y, x) = sum over channels of
// input(ch, y, x) * d logit_c / d input(ch, y, x), through the model's
// eval-mode backward pass (MedMamba::forward(x, false, true) + backward). It is
// the first-order estimate of how much each pixel adds to the class's logit
// compared with an all-zero input, which after the model's normalisation is a
// uniform mid-grey image (for mean = std = 0.5). Positive values are evidence
// for the class; docs/mm-predict.md says how to read the pictures.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/medmamba.h"
#include "model/model_file.h"

namespace mm {

// images: (B,C,S,S) model inputs; classes: the class to explain, one per image.
// Returns (B,S,S) float32 maps. Runs on the CPU model (the GPU backend has no
// backward pass); the model's parameter gradients are left changed.
Tensor gradient_times_input(MedMamba& model, const Tensor& images, const std::vector<int64_t>& classes);

// An RGB picture, S high and 2S wide: on the left the model input as the model
// saw it (normalisation undone), on the right the same with the map's positive
// part laid over it as a heat map (smoothed with a Gaussian of S/112 pixels,
// scaled so that its 99.5th percentile is full colour, colour map "turbo",
// transparent where the map is 0). input: (C,S,S); map: (S,S).
std::vector<uint8_t> saliency_overlay_rgb(const float* input, const float* map, int64_t side, const Preprocess& p);

// The overlay as a PNG, enlarged by a whole factor to at least 224 px high.
void write_saliency_png(const std::string& path, const float* input, const float* map, int64_t side,
                        const Preprocess& p);

}  // namespace mm
