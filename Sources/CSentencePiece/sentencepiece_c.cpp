// The C API of CSentencePiece.h over libsentencepiece's C++ API.
// Every entry point catches C++ exceptions (std::bad_alloc above all) so that none crosses into Swift.
#include "CSentencePiece.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model_check.h"

struct csp_processor {
    sentencepiece::SentencePieceProcessor processor;
    std::vector<uint8_t> pieceTypes;  // from csp::CheckModelProto; the C++ API has no IsUserDefined
    int32_t modelType = 1;            // from csp::CheckModelProto; the C++ API hides the trainer spec
};

namespace {

// A malloc'd copy of `text`, so that C callers can release it with free.
char *CopyString(const std::string &text) {
    char *copy = static_cast<char *>(std::malloc(text.size() + 1));
    if (copy == nullptr) return nullptr;
    std::memcpy(copy, text.data(), text.size());
    copy[text.size()] = '\0';
    return copy;
}

void SetError(char **error, const std::string &message) {
    if (error != nullptr) *error = CopyString(message);
}

void ClearError(char **error) {
    if (error != nullptr) *error = nullptr;
}

// libsentencepiece's messages start with the source location and the failed check
// ("./src/trainer_interface.cc(428) [!sentences_.empty()] ..."); keep the location out of user messages but
// keep the check when it is all there is.
std::string StatusMessage(const sentencepiece::util::Status &status) {
    std::string message = status.message();
    if (message.rfind("./src/", 0) == 0 || message.rfind("src/", 0) == 0) {
        const size_t close = message.find(") ");
        if (close != std::string::npos) message.erase(0, close + 2);
        if (!message.empty() && message.front() == '[') {
            const size_t end = message.find("] ");
            if (end != std::string::npos && end + 2 < message.size()) message.erase(0, end + 2);
        }
    }
    while (!message.empty() && (message.back() == ' ' || message.back() == '\n')) message.pop_back();
    return message.empty() ? "unknown SentencePiece error" : message;
}

csp_processor *LoadChecked(const std::string &bytes, char **error) {
    auto loaded = std::make_unique<csp_processor>();
    const std::string problem = csp::CheckModelProto(bytes, &loaded->pieceTypes, &loaded->modelType);
    if (!problem.empty()) {
        SetError(error, problem);
        return nullptr;
    }
    const auto status = loaded->processor.LoadFromSerializedProto(bytes);
    if (!status.ok()) {
        SetError(error, StatusMessage(status));
        return nullptr;
    }
    if (loaded->processor.GetPieceSize() != static_cast<int>(loaded->pieceTypes.size())) {
        SetError(error, "the piece count does not match the pieces read");
        return nullptr;
    }
    ClearError(error);
    return loaded.release();
}

// Trains with spm_train options; the model goes to `serialized` when given, else to model_prefix's files.
bool Train(const std::unordered_map<std::string, std::string> &options, std::string *serialized, char **error) {
    const auto status = sentencepiece::SentencePieceTrainer::Train(options, nullptr, serialized);
    if (!status.ok()) {
        SetError(error, StatusMessage(status));
        return false;
    }
    ClearError(error);
    return true;
}

bool InRange(const csp_processor *processor, int32_t id) {
    return id >= 0 && id < processor->processor.GetPieceSize();
}

}  // namespace

extern "C" {

csp_processor *csp_load(const char *path, char **error) {
    try {
        std::ifstream file(path, std::ios::binary);
        if (!file) {
            SetError(error, "cannot open the file");
            return nullptr;
        }
        std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        if (file.bad()) {
            SetError(error, "cannot read the file");
            return nullptr;
        }
        return LoadChecked(bytes, error);
    } catch (const std::exception &exception) {
        SetError(error, exception.what());
        return nullptr;
    } catch (...) {
        SetError(error, "unknown C++ exception while loading");
        return nullptr;
    }
}

csp_processor *csp_load_serialized(const void *bytes, size_t size, char **error) {
    try {
        return LoadChecked(std::string(static_cast<const char *>(bytes), size), error);
    } catch (const std::exception &exception) {
        SetError(error, exception.what());
        return nullptr;
    } catch (...) {
        SetError(error, "unknown C++ exception while loading");
        return nullptr;
    }
}

void csp_free(csp_processor *processor) { delete processor; }

int csp_encode(const csp_processor *processor, const char *text, size_t length,
               int32_t **ids, size_t *count, char **error) {
    *ids = nullptr;
    *count = 0;
    try {
        std::vector<int> encoded;
        const auto status = processor->processor.Encode(std::string_view(text, length), &encoded);
        if (!status.ok()) {
            SetError(error, StatusMessage(status));
            return -1;
        }
        if (!encoded.empty()) {
            *ids = static_cast<int32_t *>(std::malloc(encoded.size() * sizeof(int32_t)));
            if (*ids == nullptr) {
                SetError(error, "out of memory");
                return -1;
            }
            for (size_t i = 0; i < encoded.size(); ++i) (*ids)[i] = static_cast<int32_t>(encoded[i]);
        }
        *count = encoded.size();
        ClearError(error);
        return 0;
    } catch (const std::exception &exception) {
        SetError(error, exception.what());
        return -1;
    } catch (...) {
        SetError(error, "unknown C++ exception while encoding");
        return -1;
    }
}

void csp_free_ids(int32_t *ids) { std::free(ids); }

char *csp_decode(const csp_processor *processor, const int32_t *ids, size_t count, size_t *length, char **error) {
    *length = 0;
    try {
        std::vector<int> input(count);
        for (size_t i = 0; i < count; ++i) {
            // libsentencepiece indexes its piece table with the id unchecked.
            if (!InRange(processor, ids[i])) {
                SetError(error, "id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                    " is outside the vocabulary of " +
                                    std::to_string(processor->processor.GetPieceSize()) + " pieces");
                return nullptr;
            }
            input[i] = ids[i];
        }
        std::string text;
        const auto status = processor->processor.Decode(input, &text);
        if (!status.ok()) {
            SetError(error, StatusMessage(status));
            return nullptr;
        }
        char *copy = CopyString(text);
        if (copy == nullptr) {
            SetError(error, "out of memory");
            return nullptr;
        }
        *length = text.size();
        ClearError(error);
        return copy;
    } catch (const std::exception &exception) {
        SetError(error, exception.what());
        return nullptr;
    } catch (...) {
        SetError(error, "unknown C++ exception while decoding");
        return nullptr;
    }
}

void csp_free_string(char *string) { std::free(string); }

int32_t csp_piece_count(const csp_processor *processor) { return processor->processor.GetPieceSize(); }
int32_t csp_unk_id(const csp_processor *processor) { return processor->processor.unk_id(); }
int32_t csp_bos_id(const csp_processor *processor) { return processor->processor.bos_id(); }
int32_t csp_eos_id(const csp_processor *processor) { return processor->processor.eos_id(); }
int32_t csp_pad_id(const csp_processor *processor) { return processor->processor.pad_id(); }
int32_t csp_model_type(const csp_processor *processor) { return processor->modelType; }

const char *csp_id_to_piece(const csp_processor *processor, int32_t id, size_t *length) {
    *length = 0;
    if (!InRange(processor, id)) return nullptr;
    const std::string &piece = processor->processor.IdToPiece(id);
    *length = piece.size();
    return piece.data();
}

int32_t csp_piece_to_id(const csp_processor *processor, const char *piece, size_t length) {
    try {
        return processor->processor.PieceToId(std::string_view(piece, length));
    } catch (...) {
        return processor->processor.unk_id();
    }
}

float csp_score(const csp_processor *processor, int32_t id) {
    return InRange(processor, id) ? processor->processor.GetScore(id) : 0.0f;
}

csp_piece_type csp_type(const csp_processor *processor, int32_t id) {
    if (!InRange(processor, id)) return CSP_PIECE_INVALID;
    return static_cast<csp_piece_type>(processor->pieceTypes[static_cast<size_t>(id)]);
}

int csp_train(const char *const *names, const char *const *values, size_t count,
              void **model, size_t *size, char **error) {
    *model = nullptr;
    *size = 0;
    try {
        std::unordered_map<std::string, std::string> options;
        for (size_t i = 0; i < count; ++i) options[names[i]] = values[i];
        std::string serialized;
        if (!Train(options, &serialized, error)) return -1;
        if (serialized.empty()) {
            SetError(error, "the trainer produced no model");
            return -1;
        }
        *model = std::malloc(serialized.size());
        if (*model == nullptr) {
            SetError(error, "out of memory");
            return -1;
        }
        std::memcpy(*model, serialized.data(), serialized.size());
        *size = serialized.size();
        return 0;
    } catch (const std::exception &exception) {
        SetError(error, exception.what());
        return -1;
    } catch (...) {
        SetError(error, "unknown C++ exception while training");
        return -1;
    }
}

int csp_train_arguments(const char *arguments, char **error) {
    try {
        // Split as SentencePieceTrainer::MergeSpecsFromArgs does ("--name=value" at spaces), but train through
        // the options map: Train(string) logs the whole command line to stderr before it reads --minloglevel.
        std::unordered_map<std::string, std::string> options;
        std::string_view rest(arguments);
        while (!rest.empty()) {
            const size_t space = rest.find(' ');
            std::string_view argument = rest.substr(0, space);
            rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
            if (argument.empty()) continue;
            if (argument.rfind("--", 0) == 0) argument.remove_prefix(2);
            const size_t equals = argument.find('=');
            if (equals == std::string_view::npos) {
                options[std::string(argument)] = "";
            } else {
                options[std::string(argument.substr(0, equals))] = std::string(argument.substr(equals + 1));
            }
        }
        return Train(options, nullptr, error) ? 0 : -1;
    } catch (const std::exception &exception) {
        SetError(error, exception.what());
        return -1;
    } catch (...) {
        SetError(error, "unknown C++ exception while training");
        return -1;
    }
}

void csp_free_bytes(void *bytes) { std::free(bytes); }

}  // extern "C"
