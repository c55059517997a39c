// Structural check of a serialized SentencePiece ModelProto, done before libsentencepiece parses it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace csp {

/// Walks the protobuf wire format of a ModelProto. Returns "" when the model is safe to hand to
/// libsentencepiece, else a short description of what is wrong. On success `pieceTypes` holds the type of
/// every piece (sentencepiece_model.proto numbering; 1 = normal), which the public C++ API does not expose.
std::string CheckModelProto(std::string_view bytes, std::vector<uint8_t> *pieceTypes);

}  // namespace csp
