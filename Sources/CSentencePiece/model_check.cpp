// Why this file exists: libsentencepiece parses a model with protobuf (safe: a malformed file is an error), but
// then trusts the precompiled normalization trie inside it. A corrupt trie makes Normalizer read out of bounds
// and crash on the first encode. So the wire format is walked here, and every normalization trie is traversed
// exactly as Darts::DoubleArray::commonPrefixSearch would, checking each read it could make.
#include "model_check.h"

#include <algorithm>
#include <cstring>

namespace csp {
namespace {

// Field numbers of sentencepiece_model.proto.
constexpr uint32_t kModelPieces = 1;
constexpr uint32_t kModelTrainerSpec = 2;
constexpr uint32_t kTrainerModelType = 3;  // inside TrainerSpec
constexpr uint32_t kModelNormalizerSpec = 3;
constexpr uint32_t kModelDenormalizerSpec = 5;
constexpr uint32_t kPieceType = 3;
constexpr uint32_t kNormalizerPrecompiledCharsMap = 2;

// Normalizer::kMaxTrieResultsSize: NormalizePrefix keeps this many prefix matches in a stack array and reads
// as many as the trie reports, so no input may match more rules than this.
constexpr int kMaxTrieResults = 32;

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// A bounds-checked reader over one protobuf message.
class WireReader {
public:
    explicit WireReader(std::string_view bytes) : bytes_(bytes) {}

    bool done() const { return position_ >= bytes_.size(); }
    size_t position() const { return position_; }

    bool readVarint(uint64_t *value) {
        uint64_t result = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (position_ >= bytes_.size()) return false;
            const uint8_t byte = static_cast<uint8_t>(bytes_[position_++]);
            result |= static_cast<uint64_t>(byte & 0x7F) << shift;
            if (byte < 0x80) {
                *value = result;
                return true;
            }
        }
        return false;  // more than 10 bytes
    }

    /// Reads a field key and its payload: `payload` is set for length-delimited fields, `varint` for varints.
    bool readField(uint32_t *field, uint32_t *wireType, std::string_view *payload, uint64_t *varint) {
        uint64_t key = 0;
        if (!readVarint(&key) || (key >> 3) == 0 || (key >> 3) > 0x1FFFFFFF) return false;
        *field = static_cast<uint32_t>(key >> 3);
        *wireType = static_cast<uint32_t>(key & 7);
        switch (*wireType) {
        case kVarint:
            return readVarint(varint);
        case kFixed64:
            return skip(8);
        case kFixed32:
            return skip(4);
        case kLengthDelimited: {
            uint64_t length = 0;
            if (!readVarint(&length) || length > bytes_.size() - position_) return false;
            *payload = bytes_.substr(position_, static_cast<size_t>(length));
            position_ += static_cast<size_t>(length);
            return true;
        }
        default:
            return false;  // groups (3, 4) are never written by SentencePiece; 6 and 7 do not exist
        }
    }

private:
    bool skip(size_t count) {
        if (count > bytes_.size() - position_) return false;
        position_ += count;
        return true;
    }

    std::string_view bytes_;
    size_t position_ = 0;
};

// Darts-clone's DoubleArrayUnit accessors (third_party/darts_clone/darts.h).
inline uint32_t UnitOffset(uint32_t unit) { return (unit >> 10) << ((unit & (1U << 9)) >> 6); }
inline bool UnitHasLeaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
inline uint32_t UnitLabel(uint32_t unit) { return unit & ((1U << 31) | 0xFF); }
inline uint32_t UnitValue(uint32_t unit) { return unit & ((1U << 31) - 1); }

// The precompiled charsmap is [uint32 trie size][trie: 32-bit units][NUL-terminated replacement strings];
// a leaf value is the offset of its replacement string. Layout from Normalizer::DecodePrecompiledCharsMap.
std::string CheckCharsMap(std::string_view blob) {
    uint32_t trieBytes = 0;
    if (blob.size() <= sizeof(trieBytes)) return "its normalization rules are truncated";
    std::memcpy(&trieBytes, blob.data(), sizeof(trieBytes));
    if (trieBytes > blob.size() - sizeof(trieBytes)) return "its normalization trie runs past the end of its rules";
    const std::string_view trie = blob.substr(sizeof(trieBytes), trieBytes);
    const std::string_view replacements = blob.substr(sizeof(trieBytes) + trieBytes);
    const size_t unitCount = trie.size() / sizeof(uint32_t);
    if (unitCount == 0) return "its normalization trie is empty";
    auto unitAt = [&trie](size_t index) {
        uint32_t unit = 0;
        std::memcpy(&unit, trie.data() + index * sizeof(uint32_t), sizeof(uint32_t));
        return unit;
    };

    // commonPrefixSearch: base = offset(root); per input byte c: unit = units[base ^ c]; stop unless
    // label(unit) == c; base ^= offset(unit); a leaf's value is units[base]. darts-clone shares equal
    // subtrees, so the nodes form a DAG: a depth-first walk checks every read the search can make, rejects
    // cycles, and finds the most leaves (rule matches) on any path from the root.
    enum : uint8_t { kUnvisited = 0, kOnPath = 1, kDone = 2 };
    std::vector<uint8_t> state(unitCount, kUnvisited);
    std::vector<int> mostLeaves(unitCount, 0);  // of a finished node: the most leaves on a path below it
    struct Frame {
        uint32_t base;
        uint32_t nextLabel;
        int best;          // most leaves below this node found so far
        int pendingLeaf;   // 1 when the child being walked was reached through a leaf-bearing unit
    };
    std::vector<Frame> stack;
    auto enter = [&](uint32_t base) -> std::string {
        // The next input byte can be any of 256 values, so the whole block base ^ [0, 255] must be inside.
        if ((static_cast<size_t>(base) | 0xFF) >= unitCount) return "its normalization trie points outside itself";
        if (state[base] == kOnPath) return "its normalization trie has a cycle";
        state[base] = kOnPath;
        stack.push_back({base, 0, 0, 0});
        return "";
    };
    std::string problem = enter(UnitOffset(unitAt(0)));
    if (!problem.empty()) return problem;
    while (!stack.empty()) {
        Frame &frame = stack.back();
        if (frame.nextLabel == 256) {
            state[frame.base] = kDone;
            mostLeaves[frame.base] = frame.best;
            const int below = frame.best;
            stack.pop_back();
            if (!stack.empty()) stack.back().best = std::max(stack.back().best, stack.back().pendingLeaf + below);
            continue;
        }
        const uint32_t label = frame.nextLabel++;
        const uint32_t unit = unitAt(frame.base ^ label);
        if (UnitLabel(unit) != label) continue;
        const uint32_t childBase = frame.base ^ label ^ UnitOffset(unit);
        int leaf = 0;
        if (UnitHasLeaf(unit)) {
            if (childBase >= unitCount) return "its normalization trie points outside itself";
            const uint32_t value = UnitValue(unitAt(childBase));
            if (value >= replacements.size() ||
                std::memchr(replacements.data() + value, '\0', replacements.size() - value) == nullptr) {
                return "a normalization rule points outside its replacement strings";
            }
            leaf = 1;
        }
        if (childBase < unitCount && state[childBase] == kDone) {
            frame.best = std::max(frame.best, leaf + mostLeaves[childBase]);
        } else {
            frame.pendingLeaf = leaf;
            problem = enter(childBase);  // may reallocate `stack`: `frame` is not used after this
            if (!problem.empty()) return problem;
        }
    }
    if (mostLeaves[UnitOffset(unitAt(0))] > kMaxTrieResults) return "its normalization rules nest too deeply";
    return "";
}

std::string CheckNormalizerSpec(std::string_view spec, const char *which) {
    WireReader reader(spec);
    std::string_view charsMap;
    while (!reader.done()) {
        uint32_t field = 0, wireType = 0;
        std::string_view payload;
        uint64_t varint = 0;
        if (!reader.readField(&field, &wireType, &payload, &varint)) {
            return std::string("its ") + which + " is malformed";
        }
        if (field == kNormalizerPrecompiledCharsMap && wireType == kLengthDelimited) charsMap = payload;  // last wins
    }
    return charsMap.empty() ? "" : CheckCharsMap(charsMap);
}

}  // namespace

std::string CheckModelProto(std::string_view bytes, std::vector<uint8_t> *pieceTypes, int32_t *modelType) {
    pieceTypes->clear();
    *modelType = 1;  // TrainerSpec.model_type defaults to UNIGRAM
    if (bytes.empty()) return "the file is empty";
    WireReader reader(bytes);
    while (!reader.done()) {
        const size_t start = reader.position();
        uint32_t field = 0, wireType = 0;
        std::string_view payload;
        uint64_t varint = 0;
        if (!reader.readField(&field, &wireType, &payload, &varint)) {
            return "malformed or truncated data at byte " + std::to_string(start);
        }
        if (wireType != kLengthDelimited) continue;  // unknown scalar fields are ignored, as protobuf does
        if (field == kModelPieces) {
            WireReader piece(payload);
            uint8_t type = 1;  // NORMAL is the default; an unknown enum value also reads as NORMAL
            while (!piece.done()) {
                uint32_t pieceField = 0, pieceWire = 0;
                std::string_view pieceBytes;
                uint64_t pieceVarint = 0;
                if (!piece.readField(&pieceField, &pieceWire, &pieceBytes, &pieceVarint)) {
                    return "piece " + std::to_string(pieceTypes->size()) + " is malformed";
                }
                if (pieceField == kPieceType && pieceWire == kVarint && pieceVarint >= 1 && pieceVarint <= 6) {
                    type = static_cast<uint8_t>(pieceVarint);
                }
            }
            pieceTypes->push_back(type);
        } else if (field == kModelTrainerSpec) {
            WireReader spec(payload);
            while (!spec.done()) {
                uint32_t specField = 0, specWire = 0;
                std::string_view specBytes;
                uint64_t specVarint = 0;
                if (!spec.readField(&specField, &specWire, &specBytes, &specVarint)) return "its trainer spec is malformed";
                if (specField == kTrainerModelType && specWire == kVarint && specVarint <= 4) {
                    *modelType = static_cast<int32_t>(specVarint);
                }
            }
        } else if (field == kModelNormalizerSpec) {
            const std::string problem = CheckNormalizerSpec(payload, "normalizer");
            if (!problem.empty()) return problem;
        } else if (field == kModelDenormalizerSpec) {
            const std::string problem = CheckNormalizerSpec(payload, "denormalizer");
            if (!problem.empty()) return problem;
        }
    }
    if (pieceTypes->empty()) return "it holds no pieces";
    return "";
}

}  // namespace csp
