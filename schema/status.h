// Status and Result<T>: how every fallible function in fqpack reports failure.
//
// Library code never throws and never exits; it returns a Status (or a
// Result<T> holding either a value or a non-OK Status). Only cli/ turns a
// Status into a message and an exit code. Messages name the thing that is
// wrong and where: "<file>: <where>: <what>".
//
// Thread-safety: Status and Result are values; distinct objects may be used
// from distinct threads freely.
#ifndef FQPACK_SCHEMA_STATUS_H_
#define FQPACK_SCHEMA_STATUS_H_

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace fqpack {

class [[nodiscard]] Status {
 public:
  enum class Code : unsigned char {
    kOk = 0,
    kNotFound,
    kCorruption,       // bytes from a file or the index are wrong
    kIOError,          // the operating system said no
    kInvalidArgument,  // the caller (usually the user) asked for something wrong
    kNotSupported,     // a valid request fqpack does not implement (version, type, arch)
    kAborted,          // interrupted on purpose (Ctrl-C, a cancelled search)
    kBusy,             // another process holds a lock we need
  };

  Status() = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status Corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status IOError(std::string_view msg) { return Status(Code::kIOError, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(Code::kInvalidArgument, msg);
  }
  static Status NotSupported(std::string_view msg) { return Status(Code::kNotSupported, msg); }
  static Status Aborted(std::string_view msg) { return Status(Code::kAborted, msg); }
  static Status Busy(std::string_view msg) { return Status(Code::kBusy, msg); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsNotSupported() const { return code_ == Code::kNotSupported; }
  bool IsAborted() const { return code_ == Code::kAborted; }
  bool IsBusy() const { return code_ == Code::kBusy; }

  // The same code with "<prefix>: " put before the message; OK stays OK.
  Status WithContext(std::string_view prefix) const;

  // "Corruption: <message>", or "OK".
  std::string ToString() const;
  static const char* CodeName(Code code);

 private:
  Status(Code code, std::string_view msg) : code_(code), msg_(msg) {}

  Code code_ = Code::kOk;
  std::string msg_;
};

// Either a T or a non-OK Status. Accessing value() of an error is a
// programmer error (asserted).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::OK() : std::get<Status>(v_); }

  T& value() & {
    assert(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace fqpack

#define FQ_CONCAT_INNER_(a, b) a##b
#define FQ_CONCAT_(a, b) FQ_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function when it is not OK.
#define FQ_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::fqpack::Status fq_status_ = (expr);    \
    if (!fq_status_.ok()) return fq_status_; \
  } while (0)

// `lhs = value of expr`, or return its Status. lhs may declare a variable:
//   FQ_ASSIGN_OR_RETURN(auto file, env->MapFile(path));
#define FQ_ASSIGN_OR_RETURN(lhs, expr) \
  FQ_ASSIGN_OR_RETURN_IMPL_(FQ_CONCAT_(fq_result_, __LINE__), lhs, expr)
// tmp is a name and lhs may be a declaration, so neither can be
// parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define FQ_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)

#endif  // FQPACK_SCHEMA_STATUS_H_
