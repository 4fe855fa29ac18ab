/* SPDX-License-Identifier: MIT
 *
 * crypt.c - client-side encryption of a repository: the primitives
 * (AES-256-GCM, HMAC-SHA256, PBKDF2-HMAC-SHA256 through OpenSSL
 * libcrypto) and the key file.
 *
 * DESIGN: an encrypted repository has two random 256-bit master keys: the
 * encryption key (AES-256-GCM of every chunk, index and manifest, a fresh
 * random 96-bit nonce per encryption, so no nonce is used twice with the
 * key in practice: 2^-32 after 2^32 objects) and the id key (chunk ids =
 * HMAC-SHA256(id key, plain data): equal data still gets equal ids, so
 * dedup works, but an id tells nothing about the data to someone without
 * the key).  Both live only in the key file, encrypted (AES-256-GCM) with
 * a key derived from a passphrase by PBKDF2-HMAC-SHA256 with a random
 * salt; the repository's config holds the repository id and a key check
 * (an HMAC of the id under both keys), so a key file of another
 * repository is refused like a wrong passphrase: by the GCM tag or by the
 * key check, before anything is read or written.  Layouts in FORMAT.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/error.h"
#include "internal.h"

#define KDF_NAME "pbkdf2-hmac-sha256"
#define KDF_ITERATIONS_DEFAULT 300000
#define KDF_ITERATIONS_MIN 1000
#define KDF_ITERATIONS_MAX 100000000
#define CIPHER_NAME "aes-256-gcm"
#define ID_NAME "hmac-sha256"
#define SALT_LEN 16
#define REPO_ID_LEN 16
#define KEYFILE_VERSION 1
#define WRONG_KEY "wrong passphrase or key file"

/* Sets the message (no errno text: the message is the reason) and
 * returns -EACCES. */
static int
denied (const char *fmt, ...)
{
  char buf[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  vbk_set_error ("%s", buf);
  return -EACCES;
}

/* ---- Primitives ------------------------------------------------------------ */

static int
gcm (int enc, const unsigned char *key, const unsigned char *nonce,
     const void *aad, size_t aadlen, const void *in, size_t len, void *out,
     unsigned char *tag)
{
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new ();
  int n, ok;

  if (c == NULL)
    return -ENOMEM;
  ok = EVP_CipherInit_ex (c, EVP_aes_256_gcm (), NULL, NULL, NULL, enc) == 1
    && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_IVLEN, BACKUP_NONCE_LEN,
                            NULL) == 1
    && EVP_CipherInit_ex (c, NULL, NULL, key, nonce, enc) == 1
    && (aadlen == 0
        || EVP_CipherUpdate (c, NULL, &n, aad, (int) aadlen) == 1)
    && (len == 0 || EVP_CipherUpdate (c, out, &n, in, (int) len) == 1)
    && (enc || EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_TAG, BACKUP_TAG_LEN,
                                    tag) == 1)
    && EVP_CipherFinal_ex (c, (unsigned char *) out + (len ? n : 0), &n) == 1
    && (!enc || EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_GET_TAG, BACKUP_TAG_LEN,
                                     tag) == 1);
  EVP_CIPHER_CTX_free (c);
  return ok ? 0 : enc ? -EIO : -EBADMSG;
}

int
backup_gcm_seal (const unsigned char *key, const unsigned char *nonce,
                 const void *aad, size_t aadlen, const void *in, size_t len,
                 void *out, unsigned char *tag)
{
  return gcm (1, key, nonce, aad, aadlen, in, len, out, tag);
}

int
backup_gcm_open (const unsigned char *key, const unsigned char *nonce,
                 const void *aad, size_t aadlen, const void *in, size_t len,
                 void *out, const unsigned char *tag)
{
  unsigned char t[BACKUP_TAG_LEN];

  memcpy (t, tag, sizeof t);
  return gcm (0, key, nonce, aad, aadlen, in, len, out, t);
}

void
backup_hmac (const unsigned char *key, const void *buf, size_t len,
             unsigned char *out)
{
  unsigned int n = BACKUP_DIGEST_LEN;

  HMAC (EVP_sha256 (), key, BACKUP_KEY_LEN, buf, len, out, &n);
}

int
backup_random (void *buf, size_t len)
{
  size_t done = 0;
  ssize_t n;

  while (done < len) {
    n = getrandom ((char *) buf + done, len - done, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return vbk_errno (-EIO, "backup: no random numbers");
    done += (size_t) n;
  }
  return 0;
}

void
backup_chunk_id (const struct backup_repo *r, const void *plain, size_t len,
                 unsigned char *d)
{
  if (r->crypt)
    backup_hmac (r->crypt->id, plain, len, d);
  else
    backup_sha256 (plain, len, d);
}

/* ---- Hex --------------------------------------------------------------------- */

static void
to_hex (const unsigned char *b, size_t n, char *out)
{
  static const char x[] = "0123456789abcdef";
  size_t i;

  for (i = 0; i < n; i++) {
    out[2 * i] = x[b[i] >> 4];
    out[2 * i + 1] = x[b[i] & 15];
  }
  out[2 * n] = '\0';
}

static int
from_hex (const char *s, unsigned char *b, size_t n)
{
  size_t i;
  int a, c;

  if (s == NULL || strlen (s) != 2 * n)
    return -EINVAL;
  for (i = 0; i < n; i++) {
    a = s[2 * i];
    c = s[2 * i + 1];
    a = a >= '0' && a <= '9' ? a - '0' : a >= 'a' && a <= 'f' ? a - 'a' + 10
      : -1;
    c = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
      : -1;
    if (a < 0 || c < 0)
      return -EINVAL;
    b[i] = (unsigned char) (a << 4 | c);
  }
  return 0;
}

static const char *
jstr (json_object *o, const char *key)
{
  json_object *v;

  if (o == NULL || !json_object_object_get_ex (o, key, &v)
      || !json_object_is_type (v, json_type_string))
    return NULL;
  return json_object_get_string (v);
}

/* ---- Keys ---------------------------------------------------------------------- */

/* The key check: HMAC-SHA256 under the id key of the HMAC-SHA256 under
 * the encryption key of "vbk key check " + the repository id. */
static void
key_check (const struct backup_crypt *k, const char *repo_id,
           unsigned char *out)
{
  unsigned char t[BACKUP_DIGEST_LEN];
  char msg[64];
  int n = snprintf (msg, sizeof msg, "vbk key check %s", repo_id);

  backup_hmac (k->enc, msg, (size_t) n, t);
  backup_hmac (k->id, t, sizeof t, out);
  OPENSSL_cleanse (t, sizeof t);
}

static int
derive (const char *pass, const unsigned char *salt, uint32_t iter,
        unsigned char *kek)
{
  if (PKCS5_PBKDF2_HMAC (pass, (int) strlen (pass), salt, SALT_LEN,
                         (int) iter, EVP_sha256 (), BACKUP_KEY_LEN,
                         kek) != 1)
    return vbk_errno (-EIO, "backup: key derivation failed");
  return 0;
}

static void
wrap_aad (const char *repo_id, char *buf, size_t len)
{
  snprintf (buf, len, "vbk backup key %s", repo_id);
}

int
backup_key_create (const struct backup_key_opts *ko, struct backup_crypt *k,
                   void **encp)
{
  unsigned char rid[REPO_ID_LEN], salt[SALT_LEN], nonce[BACKUP_NONCE_LEN];
  unsigned char kek[BACKUP_KEY_LEN], plain[2 * BACKUP_KEY_LEN];
  unsigned char wrapped[2 * BACKUP_KEY_LEN], tag[BACKUP_TAG_LEN];
  unsigned char chk[BACKUP_DIGEST_LEN];
  char rid_hex[2 * REPO_ID_LEN + 1], hex[2 * (2 * BACKUP_KEY_LEN
                                              + BACKUP_TAG_LEN) + 1];
  char aad[64];
  uint32_t iter = ko->kdf_iterations ? ko->kdf_iterations
    : KDF_ITERATIONS_DEFAULT;
  json_object *f = NULL, *enc = NULL;
  const char *s;
  size_t len, done = 0;
  ssize_t n;
  int fd = -1, e;

  if (ko->key_file == NULL || ko->passphrase == NULL)
    return vbk_errno (-EINVAL, "backup: an encrypted repository needs a key "
                      "file and a passphrase");
  if (ko->passphrase[0] == '\0')
    return vbk_errno (-EINVAL, "backup: the passphrase is empty");
  if (iter < KDF_ITERATIONS_MIN || iter > KDF_ITERATIONS_MAX)
    return vbk_errno (-EINVAL, "backup: KDF iterations must be %d to %d",
                      KDF_ITERATIONS_MIN, KDF_ITERATIONS_MAX);
  if ((e = backup_random (rid, sizeof rid)) < 0
      || (e = backup_random (salt, sizeof salt)) < 0
      || (e = backup_random (nonce, sizeof nonce)) < 0
      || (e = backup_random (k->enc, sizeof k->enc)) < 0
      || (e = backup_random (k->id, sizeof k->id)) < 0)
    return e;
  to_hex (rid, sizeof rid, rid_hex);
  if ((e = derive (ko->passphrase, salt, iter, kek)) < 0)
    goto out;
  memcpy (plain, k->enc, BACKUP_KEY_LEN);
  memcpy (plain + BACKUP_KEY_LEN, k->id, BACKUP_KEY_LEN);
  wrap_aad (rid_hex, aad, sizeof aad);
  if ((e = backup_gcm_seal (kek, nonce, aad, strlen (aad), plain,
                            sizeof plain, wrapped, tag)) < 0) {
    vbk_errno (e, "backup: encrypting the key");
    goto out;
  }

  f = json_object_new_object ();
  json_object_object_add (f, "vbk_backup_key",
                          json_object_new_int (KEYFILE_VERSION));
  json_object_object_add (f, "repository", json_object_new_string (rid_hex));
  json_object_object_add (f, "kdf", json_object_new_string (KDF_NAME));
  json_object_object_add (f, "iterations", json_object_new_int64 (iter));
  to_hex (salt, sizeof salt, hex);
  json_object_object_add (f, "salt", json_object_new_string (hex));
  json_object_object_add (f, "cipher", json_object_new_string (CIPHER_NAME));
  to_hex (nonce, sizeof nonce, hex);
  json_object_object_add (f, "nonce", json_object_new_string (hex));
  to_hex (wrapped, sizeof wrapped, hex);
  to_hex (tag, sizeof tag, hex + 2 * sizeof wrapped);
  json_object_object_add (f, "keys", json_object_new_string (hex));
  s = json_object_to_json_string_ext (f, JSON_C_TO_STRING_PRETTY);
  len = strlen (s);

  fd = open (ko->key_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    e = -errno;
    if (e == -EEXIST)
      vbk_set_error ("backup: key file %s exists (a new repository needs a "
                     "new key file)", ko->key_file);
    else
      vbk_errno (e, "backup: key file %s", ko->key_file);
    goto out;
  }
  while (done < len) {
    n = write (fd, s + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      e = vbk_errno (n < 0 ? -errno : -EIO, "backup: writing key file %s",
                     ko->key_file);
      goto out_unlink;
    }
    done += (size_t) n;
  }
  if (write (fd, "\n", 1) != 1 || fsync (fd) < 0) {
    e = vbk_errno (-errno, "backup: writing key file %s", ko->key_file);
    goto out_unlink;
  }

  key_check (k, rid_hex, chk);
  to_hex (chk, sizeof chk, hex);
  enc = json_object_new_object ();
  json_object_object_add (enc, "cipher", json_object_new_string (CIPHER_NAME));
  json_object_object_add (enc, "chunk_id", json_object_new_string (ID_NAME));
  json_object_object_add (enc, "kdf", json_object_new_string (KDF_NAME));
  json_object_object_add (enc, "repository", json_object_new_string (rid_hex));
  json_object_object_add (enc, "key_check", json_object_new_string (hex));
  *encp = enc;
  e = 0;
  goto out;
 out_unlink:
  unlink (ko->key_file);
 out:
  if (fd >= 0)
    close (fd);
  json_object_put (f);
  OPENSSL_cleanse (kek, sizeof kek);
  OPENSSL_cleanse (plain, sizeof plain);
  return e;
}

int
backup_key_load (const struct backup_key_opts *ko, const void *encv,
                 struct backup_crypt *k)
{
  json_object *enc = (json_object *) encv, *f = NULL, *v;
  unsigned char salt[SALT_LEN], nonce[BACKUP_NONCE_LEN];
  unsigned char kek[BACKUP_KEY_LEN], plain[2 * BACKUP_KEY_LEN];
  unsigned char wrapped[2 * BACKUP_KEY_LEN + BACKUP_TAG_LEN];
  unsigned char chk[BACKUP_DIGEST_LEN], want[BACKUP_DIGEST_LEN];
  const char *rid = jstr (enc, "repository"), *s;
  char aad[64], buf[4096];
  int64_t iter;
  ssize_t n;
  int fd, e;

  if (jstr (enc, "cipher") == NULL || strcmp (jstr (enc, "cipher"),
                                              CIPHER_NAME) != 0
      || jstr (enc, "chunk_id") == NULL
      || strcmp (jstr (enc, "chunk_id"), ID_NAME) != 0)
    return vbk_errno (-EPROTONOSUPPORT, "backup: the repository's "
                      "encryption (%s, %s) is not one this vbk knows",
                      jstr (enc, "cipher") ? jstr (enc, "cipher") : "?",
                      jstr (enc, "chunk_id") ? jstr (enc, "chunk_id") : "?");
  if (rid == NULL || strlen (rid) != 2 * REPO_ID_LEN
      || from_hex (jstr (enc, "key_check"), want, sizeof want) < 0)
    return vbk_errno (-EBADMSG, "backup: the repository's encryption "
                      "settings are corrupt");
  if (ko == NULL || ko->key_file == NULL)
    return denied ("backup: the repository is encrypted: give "
                      "its key file (--key-file) and passphrase");
  if (ko->passphrase == NULL)
    return denied ("backup: the repository is encrypted: no "
                      "passphrase");
  if ((fd = open (ko->key_file, O_RDONLY | O_CLOEXEC)) < 0)
    return vbk_errno (-errno, "backup: key file %s", ko->key_file);
  n = read (fd, buf, sizeof buf - 1);
  e = n < 0 ? -errno : 0;
  close (fd);
  if (n < 0)
    return vbk_errno (e, "backup: key file %s", ko->key_file);
  buf[n] = '\0';
  f = json_tokener_parse (buf);
  if (f == NULL || !json_object_object_get_ex (f, "vbk_backup_key", &v))
    e = denied ("backup: %s is not a vbk key file: "
                   WRONG_KEY, ko->key_file);
  else if (json_object_get_int (v) > KEYFILE_VERSION
           || (s = jstr (f, "kdf")) == NULL || strcmp (s, KDF_NAME) != 0
           || (s = jstr (f, "cipher")) == NULL
           || strcmp (s, CIPHER_NAME) != 0)
    e = vbk_errno (-EPROTONOSUPPORT, "backup: key file %s is of a newer "
                   "kind than this vbk reads", ko->key_file);
  else if (!json_object_object_get_ex (f, "iterations", &v)
           || (iter = json_object_get_int64 (v)) < KDF_ITERATIONS_MIN
           || iter > KDF_ITERATIONS_MAX
           || from_hex (jstr (f, "salt"), salt, sizeof salt) < 0
           || from_hex (jstr (f, "nonce"), nonce, sizeof nonce) < 0
           || from_hex (jstr (f, "keys"), wrapped, sizeof wrapped) < 0
           || jstr (f, "repository") == NULL)
    e = denied ("backup: key file %s is corrupt: " WRONG_KEY,
                   ko->key_file);
  else if (strcmp (jstr (f, "repository"), rid) != 0)
    e = denied ("backup: key file %s belongs to another "
                   "repository: " WRONG_KEY, ko->key_file);
  else if ((e = derive (ko->passphrase, salt, (uint32_t) iter, kek)) < 0)
    ;
  else {
    wrap_aad (rid, aad, sizeof aad);
    if (backup_gcm_open (kek, nonce, aad, strlen (aad), wrapped,
                         2 * BACKUP_KEY_LEN, plain,
                         wrapped + 2 * BACKUP_KEY_LEN) < 0)
      e = denied ("backup: " WRONG_KEY);
    else {
      memcpy (k->enc, plain, BACKUP_KEY_LEN);
      memcpy (k->id, plain + BACKUP_KEY_LEN, BACKUP_KEY_LEN);
      key_check (k, rid, chk);
      if (CRYPTO_memcmp (chk, want, sizeof chk) != 0)
        e = denied ("backup: " WRONG_KEY " (the key does not "
                       "match the repository)");
      else
        e = 0;
    }
  }
  json_object_put (f);
  OPENSSL_cleanse (kek, sizeof kek);
  OPENSSL_cleanse (plain, sizeof plain);
  if (e < 0)
    OPENSSL_cleanse (k, sizeof *k);
  return e;
}
