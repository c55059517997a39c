// A small C API over libsentencepiece, so that Swift can use it without C++ interop.
//
// Nothing here throws a C++ exception, aborts or prints to stdout. Functions that can fail return an error
// through `char **error`: on failure *error is a malloc'd one-line message (release it with csp_free_string),
// on success it is set to NULL. Every model file is checked before libsentencepiece sees it, because the
// library trusts the normalization trie inside a model and reads out of bounds on a corrupt one.
#ifndef CSENTENCEPIECE_H
#define CSENTENCEPIECE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A loaded SentencePiece model. Encoding and decoding on one processor may run on several threads at once.
typedef struct csp_processor csp_processor;

/// The type of a piece, as numbered in sentencepiece_model.proto (0 means "no such id").
typedef enum csp_piece_type {
    CSP_PIECE_INVALID = 0,
    CSP_PIECE_NORMAL = 1,
    CSP_PIECE_UNKNOWN = 2,
    CSP_PIECE_CONTROL = 3,
    CSP_PIECE_USER_DEFINED = 4,
    CSP_PIECE_UNUSED = 5,
    CSP_PIECE_BYTE = 6,
} csp_piece_type;

/// Loads the model file at `path`; NULL and *error on failure (missing file, not a model, corrupt model).
csp_processor *csp_load(const char *path, char **error);

/// Loads a model from its serialized bytes; NULL and *error on failure.
csp_processor *csp_load_serialized(const void *bytes, size_t size, char **error);

/// Releases a processor (NULL is allowed).
void csp_free(csp_processor *processor);

/// Encodes `length` bytes of UTF-8 into piece ids, without BOS or EOS. On success returns 0 and sets *ids to
/// a malloc'd array of *count ids (release with csp_free_ids; it may be NULL when *count is 0); else -1.
int csp_encode(const csp_processor *processor, const char *text, size_t length,
               int32_t **ids, size_t *count, char **error);

/// Releases an id array returned by csp_encode (NULL is allowed).
void csp_free_ids(int32_t *ids);

/// Decodes ids into UTF-8 text: a malloc'd, NUL-terminated string of *length bytes (the text may itself hold
/// NUL bytes, so use *length). An id outside [0, piece count) is an error. Returns NULL and *error on failure.
char *csp_decode(const csp_processor *processor, const int32_t *ids, size_t count, size_t *length, char **error);

/// Releases a string returned by this API (decoded text or an error message; NULL is allowed).
void csp_free_string(char *string);

/// The number of pieces in the vocabulary.
int32_t csp_piece_count(const csp_processor *processor);

/// The special ids; -1 when the model has no such piece.
int32_t csp_unk_id(const csp_processor *processor);
int32_t csp_bos_id(const csp_processor *processor);
int32_t csp_eos_id(const csp_processor *processor);
int32_t csp_pad_id(const csp_processor *processor);
/// The segmentation algorithm the model was trained with: TrainerSpec.ModelType (1 unigram, 2 bpe, 3 word, 4 char).
int32_t csp_model_type(const csp_processor *processor);

/// The piece of `id` (its bytes stay valid as long as the processor) and its length; NULL when out of range.
const char *csp_id_to_piece(const csp_processor *processor, int32_t id, size_t *length);

/// The id of `piece`, or the unknown id when the vocabulary has no such piece.
int32_t csp_piece_to_id(const csp_processor *processor, const char *piece, size_t length);

/// The score of `id` (a log probability for unigram models, the merge rank for bpe); 0 when out of range.
float csp_score(const csp_processor *processor, int32_t id);

/// The type of `id`; CSP_PIECE_INVALID when out of range.
csp_piece_type csp_type(const csp_processor *processor, int32_t id);

/// Trains a model from `count` trainer options given as flag names and values (`"vocab_size"`, `"400"`; the
/// names of spm_train's flags without the dashes). The model is returned in memory, not written to disk: on
/// success returns 0 and sets *model to its malloc'd bytes (release with csp_free_bytes) and *size; else -1.
/// `input` is a comma-separated list of files, so a path holding a comma cannot be given.
int csp_train(const char *const *names, const char *const *values, size_t count,
              void **model, size_t *size, char **error);

/// Trains from one spm_train argument string (`"--input=a.txt --model_prefix=m --vocab_size=400"`), which
/// writes PREFIX.model and PREFIX.vocab. libsentencepiece splits the string at spaces, so no value may hold a
/// space; csp_train has no such limit. Returns 0, or -1 and *error.
int csp_train_arguments(const char *arguments, char **error);

/// Releases model bytes returned by csp_train (NULL is allowed).
void csp_free_bytes(void *bytes);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // CSENTENCEPIECE_H
