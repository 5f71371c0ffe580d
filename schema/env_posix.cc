// The POSIX Env: open/write/fsync/rename/unlink/mmap/flock, pread/pwrite.

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <utility>

#include "schema/env.h"
#include "schema/log.h"

namespace fqpack {
namespace {

Status PosixError(const std::string& context, int err) {
  std::string msg = context + ": " + std::strerror(err);
  if (err == ENOENT) return Status::NotFound(msg);
  return Status::IOError(msg);
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(ByteSpan data) override {
    const uint8_t* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_ + ": write", errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return Status::OK();
  }

  Status Sync() override {
    if (::fsync(fd_) != 0) return PosixError(path_ + ": fsync", errno);
    return Status::OK();
  }

  Status Close() override {
    if (fd_ < 0) return Status::OK();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return PosixError(path_ + ": close", errno);
    return Status::OK();
  }

  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
};

// The descriptors this process holds on one inode for RandomRWFiles. They
// are closed together when the last RandomRWFile of the inode closes:
// closing any descriptor of a file drops every fcntl lock the process holds
// on it, including SQLite's (see RandomRWFile in env.h).
struct InodeFds {
  std::pair<dev_t, ino_t> inode;
  int read_fd = -1;   // any of them: reads, fstat, fsync
  int write_fd = -1;  // an O_RDWR one, once some user asked to write
  std::vector<int> all;
  int users = 0;
};

class InodeTable {
 public:
  static InodeTable& Get() {
    static InodeTable* table = new InodeTable();
    return *table;
  }

  // The shared descriptors of the file at `path`, opening one when no user
  // has the access `mode` asks for yet.
  Result<InodeFds*> Acquire(const std::string& path, OpenMode mode) {
    const bool writable = mode != OpenMode::kReadOnly;
    std::lock_guard<std::mutex> lock(mu_);
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      auto it = by_inode_.find({st.st_dev, st.st_ino});
      if (it != by_inode_.end() && (!writable || it->second->write_fd >= 0)) {
        ++it->second->users;
        return it->second.get();
      }
    } else if (errno != ENOENT || mode != OpenMode::kReadWriteCreate) {
      return PosixError(path, errno);
    }
    int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
    if (mode == OpenMode::kReadWriteCreate) flags |= O_CREAT;
    int fd = ::open(path.c_str(), flags, 0644);
    if (fd < 0) return PosixError(path, errno);
    // Closing `fd` here could drop locks only if another user had the inode,
    // which the stat above ruled out (short of a race with a rename).
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return PosixError(path, err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::InvalidArgument(path + ": not a regular file");
    }
    std::unique_ptr<InodeFds>& e = by_inode_[{st.st_dev, st.st_ino}];
    if (e == nullptr) {
      e = std::make_unique<InodeFds>();
      e->inode = {st.st_dev, st.st_ino};
    }
    e->all.push_back(fd);
    if (e->read_fd < 0) e->read_fd = fd;
    if (writable && e->write_fd < 0) e->write_fd = fd;
    ++e->users;
    return e.get();
  }

  void Release(InodeFds* fds) {
    std::lock_guard<std::mutex> lock(mu_);
    if (--fds->users > 0) return;
    for (int fd : fds->all) ::close(fd);
    by_inode_.erase(fds->inode);
  }

 private:
  std::mutex mu_;
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<InodeFds>> by_inode_;
};

class PosixRandomRWFile final : public RandomRWFile {
 public:
  PosixRandomRWFile(std::string path, InodeFds* fds, bool writable)
      : path_(std::move(path)), fds_(fds), writable_(writable) {}
  ~PosixRandomRWFile() override { (void)Close(); }

  Status Read(uint64_t offset, size_t n, uint8_t* out, size_t* got) override {
    *got = 0;
    while (*got < n) {
      ssize_t r = ::pread(fds_->read_fd, out + *got, n - *got, static_cast<off_t>(offset + *got));
      if (r < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_ + ": read", errno);
      }
      if (r == 0) break;  // end of file
      *got += static_cast<size_t>(r);
    }
    return Status::OK();
  }

  Status Write(uint64_t offset, ByteSpan data) override {
    if (!writable_) return Status::InvalidArgument(path_ + ": opened read-only");
    size_t done = 0;
    while (done < data.size()) {
      ssize_t w = ::pwrite(fds_->write_fd, data.data() + done, data.size() - done,
                           static_cast<off_t>(offset + done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return PosixError(path_ + ": write", errno);
      }
      done += static_cast<size_t>(w);
    }
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    if (!writable_) return Status::InvalidArgument(path_ + ": opened read-only");
    while (::ftruncate(fds_->write_fd, static_cast<off_t>(size)) != 0) {
      if (errno != EINTR) return PosixError(path_ + ": truncate", errno);
    }
    return Status::OK();
  }

  Status Sync() override {
    if (::fsync(fds_->read_fd) != 0) return PosixError(path_ + ": fsync", errno);
    return Status::OK();
  }

  Result<uint64_t> Size() override {
    struct stat st;
    if (::fstat(fds_->read_fd, &st) != 0) return PosixError(path_ + ": fstat", errno);
    return static_cast<uint64_t>(st.st_size);
  }

  Status Close() override {
    if (fds_ != nullptr) InodeTable::Get().Release(fds_);
    fds_ = nullptr;
    return Status::OK();
  }

  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  InodeFds* fds_;
  bool writable_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  int fd_;
};

class PosixPressureTrigger final : public PressureTrigger {
 public:
  PosixPressureTrigger(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixPressureTrigger() override { ::close(fd_); }

  Result<bool> Wait(int timeout_ms) override {
    struct pollfd p = {fd_, POLLPRI, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) return false;
      return PosixError(path_ + ": poll", errno);
    }
    if (n == 0) return false;
    if ((p.revents & POLLERR) != 0) {
      return Status::IOError(path_ + ": the pressure trigger went away");
    }
    return (p.revents & POLLPRI) != 0;
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError(path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  Result<MappedFile> MapFile(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PosixError(path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return PosixError(path, err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::InvalidArgument(path + ": not a regular file");
    }
    size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) {
      ::close(fd);
      return MappedFile::FromBuffer(path, {});
    }
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    int err = errno;
    ::close(fd);  // the mapping keeps the file open
    if (addr == MAP_FAILED) return PosixError(path + ": mmap", err);
    return MappedFile::FromMapping(path, addr, size);
  }

  Result<std::unique_ptr<RandomRWFile>> OpenRandomRWFile(const std::string& path,
                                                         OpenMode mode) override {
    FQ_ASSIGN_OR_RETURN(InodeFds * fds, InodeTable::Get().Acquire(path, mode));
    return std::unique_ptr<RandomRWFile>(
        new PosixRandomRWFile(path, fds, mode != OpenMode::kReadOnly));
  }

  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return PosixError(from + " -> " + to, errno);
    return Status::OK();
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return PosixError(path + ": unlink", errno);
    return Status::OK();
  }

  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return PosixError(path + ": rmdir", errno);
    return Status::OK();
  }

  Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PosixError(path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return PosixError(path + ": fsync", err);
    return Status::OK();
  }

  Status CreateDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) != 0) {
      if (errno == EEXIST && IsDirectory(path)) return Status::OK();
      return PosixError(path + ": mkdir", errno);
    }
    return Status::OK();
  }

  Result<std::vector<std::string>> GetChildren(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return PosixError(dir, errno);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      names.emplace_back(e->d_name);
    }
    ::closedir(d);
    return names;
  }

  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  Result<uint64_t> GetFileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return PosixError(path, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path, LockMode mode,
                                             bool wait) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError(path, errno);
    int op = (mode == LockMode::kExclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
    while (::flock(fd, op) != 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) return Status::Busy(path + ": locked by another process");
      return PosixError(path + ": flock", err);
    }
    return std::unique_ptr<FileLock>(new PosixFileLock(fd));
  }

  Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PosixError(path, errno);
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return PosixError(path + ": read", err);
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.size() > max_bytes) {
        ::close(fd);
        return Status::InvalidArgument(path + ": larger than " + std::to_string(max_bytes) +
                                       " bytes");
      }
    }
    ::close(fd);
    return out;
  }

  Result<std::unique_ptr<PressureTrigger>> OpenPressureTrigger(const std::string& path,
                                                               const std::string& spec) override {
    int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == ENOENT) return Status::NotSupported(path + ": no PSI (" + std::strerror(err) + ")");
      return PosixError(path, err);
    }
    // The kernel takes the spec with its terminating NUL.
    if (::write(fd, spec.c_str(), spec.size() + 1) < 0) {
      int err = errno;
      ::close(fd);
      return Status::NotSupported(path + ": trigger \"" + spec + "\" refused: " +
                                  std::strerror(err));
    }
    return std::unique_ptr<PressureTrigger>(new PosixPressureTrigger(path, fd));
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

MappedFile MappedFile::FromMapping(std::string path, void* addr, size_t size) {
  MappedFile f;
  f.path_ = std::move(path);
  f.data_ = static_cast<const uint8_t*>(addr);
  f.size_ = size;
  f.mapped_ = true;
  return f;
}

MappedFile MappedFile::FromBuffer(std::string path, Bytes buffer) {
  MappedFile f;
  f.path_ = std::move(path);
  f.owned_ = std::move(buffer);
  f.data_ = f.owned_.data();
  f.size_ = f.owned_.size();
  return f;
}

MappedFile::~MappedFile() { Release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this == &other) return *this;
  Release();
  path_ = std::move(other.path_);
  mapped_ = other.mapped_;
  size_ = other.size_;
  owned_ = std::move(other.owned_);
  data_ = mapped_ ? other.data_ : owned_.data();
  other.data_ = nullptr;
  other.size_ = 0;
  other.mapped_ = false;
  return *this;
}

void MappedFile::Release() {
  if (mapped_ && data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
  mapped_ = false;
  owned_.clear();
}

namespace {
void Advise(const MappedFile& f, size_t offset, size_t length, int advice, const char* what) {
  if (!f.is_mapped() || offset >= f.size()) return;
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t begin = offset / page * page;
  size_t end = std::min(f.size(), offset + length);
  if (::madvise(const_cast<uint8_t*>(f.data()) + begin, end - begin, advice) != 0) {
    Warn(f.path() + ": madvise(" + what + ") failed: " + std::strerror(errno));
  }
}
}  // namespace

void MappedFile::AdviseSequential() const {
  Advise(*this, 0, size_, MADV_SEQUENTIAL, "sequential");
}
void MappedFile::AdviseWillNeed(size_t offset, size_t length) const {
  Advise(*this, offset, length, MADV_WILLNEED, "willneed");
}
void MappedFile::AdviseDontNeed(size_t offset, size_t length) const {
  Advise(*this, offset, length, MADV_DONTNEED, "dontneed");
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string UniqueTempName(const std::string& prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return prefix + "." + std::to_string(::getpid()) + "." + std::to_string(counter++) + "." +
         std::to_string(salt % 1000000);
}

Status PublishFileWith(Env* env, const std::string& path,
                       const std::function<Status(WritableFile*)>& write) {
  std::string tmp = UniqueTempName(path + ".tmp");
  auto cleanup = [&](Status s) {
    (void)env->RemoveFile(tmp);
    return s;
  };
  FQ_ASSIGN_OR_RETURN(auto file, env->NewWritableFile(tmp));
  Status s = write(file.get());
  if (s.ok()) s = file->Sync();
  Status close = file->Close();
  if (s.ok()) s = close;
  if (!s.ok()) return cleanup(s);
  s = env->RenameFile(tmp, path);
  if (!s.ok()) return cleanup(s);
  return env->SyncDir(DirName(path));
}

Status PublishFile(Env* env, const std::string& path, ByteSpan data) {
  return PublishFileWith(env, path, [&](WritableFile* f) { return f->Append(data); });
}

Result<Bytes> ReadFileBytes(Env* env, const std::string& path) {
  FQ_ASSIGN_OR_RETURN(MappedFile f, env->MapFile(path));
  return Bytes(f.data(), f.data() + f.size());
}

}  // namespace fqpack
