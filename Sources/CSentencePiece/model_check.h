// Structural check of a serialized SentencePiece ModelProto, done before libsentencepiece parses it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace csp {

/// Walks the protobuf wire format of a ModelProto. Returns "" when the model is safe to hand to
/// libsentencepiece, else a short description of what is wrong. On success `pieceTypes` holds the type of
/// every piece (sentencepiece_model.proto numbering; 1 = normal) and `modelType` the trainer's algorithm
/// (TrainerSpec.ModelType: 1 unigram, 2 bpe, 3 word, 4 char), which the public C++ API does not expose.
std::string CheckModelProto(std::string_view bytes, std::vector<uint8_t> *pieceTypes, int32_t *modelType);

}  // namespace csp
