using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace GptSharp.Pretrained;

/// <summary>Progress callbacks of <see cref="Gpt2Downloader"/> (the CLI draws bars or prints lines from them).</summary>
public interface IDownloadProgress
{
    /// <summary>A file is already complete and is not downloaded again.</summary>
    void Skipped(string fileName, long bytes);

    /// <summary>The server answered: <paramref name="totalBytes"/> (when known), resuming after <paramref name="resumedFrom"/> bytes.</summary>
    void Started(string fileName, long? totalBytes, long resumedFrom);

    /// <summary><paramref name="bytesDone"/> of the file are on disk.</summary>
    void Advanced(string fileName, long bytesDone);

    /// <summary>An attempt failed with a transient error; the next starts after <paramref name="delay"/>.</summary>
    void Retrying(string fileName, int attempt, TimeSpan delay, string reason);

    /// <summary>The file is complete and renamed into place.</summary>
    void Completed(string fileName, long bytes);
}

/// <summary>
/// Fetches OpenAI's GPT-2 files over HTTP like the book's <c>download_and_load_gpt2</c>, made robust:
/// each file goes to <c>NAME.part</c> and is renamed only when complete and of the expected size;
/// complete files are skipped; a <c>.part</c> left by a dropped connection or Ctrl+C is resumed with
/// an HTTP Range request; transient failures are retried with exponential backoff.
/// </summary>
public sealed class Gpt2Downloader(HttpClient http)
{
    private const int BufferBytes = 1 << 20;

    /// <summary>Base URL; files are at <c>BASE/124M/model.ckpt.index</c>.</summary>
    public string BaseUrl { get; init; } = Gpt2Models.DefaultBaseUrl;

    /// <summary>Attempts per file before giving up (attempts that made progress do not count).</summary>
    public int MaxAttempts { get; init; } = 5;

    /// <summary>Delay before the first retry; doubled for each further one.</summary>
    public TimeSpan InitialRetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A connection that delivers no data for this long is dropped and retried.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public IDownloadProgress? Progress { get; init; }

    /// <summary>
    /// The most bytes accepted for a file whose size is not known in advance (nor stated by the server within
    /// this limit): a server that streams without end fails here instead of filling the disk.
    /// </summary>
    public long MaxUnknownSizeBytes { get; init; } = 256L << 20;

    /// <summary>The URL of one file of one size.</summary>
    public Uri FileUrl(Gpt2ModelSize size, string fileName)
    {
        string url = $"{BaseUrl.TrimEnd('/')}/{size.Name}/{fileName}";
        return Uri.TryCreate(url, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? uri
            : throw new ArgumentException($"Gpt2Downloader.BaseUrl: '{BaseUrl}' is not an http(s) URL.");
    }

    /// <summary>Downloads all seven files of <paramref name="size"/> into <paramref name="directory"/> (created if needed).</summary>
    public async Task DownloadModelAsync(Gpt2ModelSize size, string directory, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(directory);
        foreach (string file in size.FileNames)
            await DownloadFileAsync(FileUrl(size, file), Path.Combine(directory, file), size.ExpectedSize(file), cancellationToken);
    }

    /// <summary>
    /// Downloads <paramref name="url"/> to <paramref name="path"/> through <c>path.part</c>, resuming it
    /// if present. <paramref name="expectedSize"/>, when given, must match the server and the result.
    /// </summary>
    public async Task DownloadFileAsync(Uri url, string path, long? expectedSize, CancellationToken cancellationToken = default)
    {
        string name = Path.GetFileName(path);
        string part = path + ".part";
        var existing = new FileInfo(path);
        if (existing.Exists)
        {
            if (expectedSize is null || existing.Length == expectedSize)
            {
                Progress?.Skipped(name, existing.Length);
                return;
            }
            // A complete-looking file of the wrong size (e.g. copied by hand while incomplete): fetch it again.
            if (existing.Length < expectedSize && !File.Exists(part)) File.Move(path, part);
            else File.Delete(path);
        }

        int failures = 0;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long before = File.Exists(part) ? new FileInfo(part).Length : 0;
            try
            {
                if (await TryDownloadOnceAsync(url, part, name, expectedSize, cancellationToken))
                {
                    File.Delete(ValidatorPath(part));
                    File.Move(part, path, overwrite: true);
                    Progress?.Completed(name, new FileInfo(path).Length);
                    return;
                }
            }
            catch (Exception e) when (IsTransient(e, cancellationToken))
            {
                long after = File.Exists(part) ? new FileInfo(part).Length : 0;
                if (after > before) failures = 0; // progress was made: a flaky connection, not a dead one
                failures++;
                if (failures >= MaxAttempts || IsHostNotFound(e))
                {
                    string attempts = failures == 1 ? "" : $" after {failures} attempts";
                    string kept = File.Exists(part) ? $"; the partial file {part} is kept and will be resumed" : "";
                    throw new HttpRequestException($"{url}: download failed{attempts}: {Describe(e)}. "
                        + $"Check the internet connection, set Gpt2Downloader.BaseUrl to a mirror, or copy the files by hand (see the README){kept}.", e);
                }
                var delay = InitialRetryDelay * Math.Pow(2, failures - 1);
                Progress?.Retrying(name, failures, delay, Describe(e));
                await Task.Delay(delay, cancellationToken);
            }
        }
    }

    /// <summary>One request. True when the .part file is complete; false to go round again at once (a stale .part was discarded).</summary>
    private async Task<bool> TryDownloadOnceAsync(Uri url, string part, string name, long? expectedSize, CancellationToken cancellationToken)
    {
        long have = File.Exists(part) ? new FileInfo(part).Length : 0;
        if (expectedSize is { } expected)
        {
            if (have == expected) return true;
            if (have > expected) { File.Delete(part); have = 0; }
        }
        // Resume only a file of known size whose validator (ETag or Last-Modified) was recorded when it started, and
        // only if the server still has that version (If-Range: otherwise it sends the whole new file with 200).
        string validatorPath = ValidatorPath(part);
        string? validator = have > 0 && expectedSize is not null && File.Exists(validatorPath) ? File.ReadAllText(validatorPath).Trim() : null;
        if (have > 0 && string.IsNullOrEmpty(validator)) { File.Delete(part); have = 0; }

        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (have > 0)
        {
            request.Headers.Range = new RangeHeaderValue(have, null);
            request.Headers.IfRange = validator!.StartsWith('"') || validator.StartsWith("W/", StringComparison.Ordinal)
                ? new RangeConditionHeaderValue(EntityTagHeaderValue.Parse(validator))
                : new RangeConditionHeaderValue(DateTimeOffset.Parse(validator, System.Globalization.CultureInfo.InvariantCulture));
        }
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);

        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && have > 0)
        {
            // We ask for a range only below the known size, so the server's file differs from ours: start over.
            // (Trusting a Content-Range that matches the partial length would accept a short file.)
            File.Delete(part);
            File.Delete(validatorPath);
            return false;
        }
        if (!response.IsSuccessStatusCode)
            throw new HttpRequestException($"{url}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);

        long start = 0;
        long? total = response.Content.Headers.ContentLength;
        if (response.StatusCode == HttpStatusCode.PartialContent)
        {
            var range = response.Content.Headers.ContentRange;
            if (range?.From != have)
                throw new IOException($"{url}: the server resumed at byte {range?.From} instead of {have}");
            start = have;
            total = range.Length;
        }
        if (expectedSize is { } size && total is { } serverSize && serverSize != size)
            throw new InvalidDataException($"{url}: size mismatch: the server has {serverSize:N0} bytes, expected {size:N0} for {name} (wrong Gpt2Downloader.BaseUrl or a changed file?).");
        // Never more than this reaches the disk: the known size, else the server's stated one within the cap, else the cap.
        long limit = expectedSize ?? Math.Min(total ?? MaxUnknownSizeBytes, MaxUnknownSizeBytes);
        if (expectedSize is null && total > MaxUnknownSizeBytes)
            throw new InvalidDataException($"{url}: the server offers {total:N0} bytes for {name}, more than the {MaxUnknownSizeBytes:N0}-byte limit for a file of unknown size.");
        if (start == 0)
        {
            string? newValidator = response.Headers.ETag?.ToString()
                ?? response.Content.Headers.LastModified?.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
            if (newValidator is null) File.Delete(validatorPath);
            else File.WriteAllText(validatorPath, newValidator);
        }

        Progress?.Started(name, total ?? expectedSize, start);
        await using (var output = new FileStream(part, start > 0 ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 0, useAsync: true))
        await using (var input = await response.Content.ReadAsStreamAsync(cancellationToken))
        {
            var buffer = new byte[BufferBytes];
            long done = start;
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            while (true)
            {
                stall.CancelAfter(StallTimeout);
                int n;
                try
                {
                    n = await input.ReadAsync(buffer, stall.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new IOException($"no data received for {StallTimeout.TotalSeconds:0} s");
                }
                if (n == 0) break;
                if (n > limit - done)
                {
                    await output.DisposeAsync();
                    File.Delete(part);
                    File.Delete(validatorPath);
                    throw new InvalidDataException($"{url}: the server sent more than the {limit:N0} bytes expected for {name}; the partial file was deleted.");
                }
                await output.WriteAsync(buffer.AsMemory(0, n), cancellationToken);
                done += n;
                Progress?.Advanced(name, done);
            }
            await output.FlushAsync(cancellationToken);
            output.Flush(flushToDisk: true); // on disk before the rename makes it the real file
        }

        long got = new FileInfo(part).Length;
        if (total is { } t && got < t) throw new IOException($"the connection closed after {got:N0} of {t:N0} bytes");
        if ((total is { } t2 && got != t2) || (expectedSize is { } e && got != e))
        {
            File.Delete(part);
            throw new InvalidDataException($"{url}: size mismatch: received {got:N0} bytes, expected {expectedSize ?? total:N0} for {name}; the partial file was deleted.");
        }
        return true;
    }

    /// <summary>Network errors, server errors (5xx, 408, 429) and dropped connections are worth retrying; 4xx and size mismatches are not.</summary>
    /// <summary>Beside the .part: the ETag or Last-Modified of the version being downloaded, for If-Range on resume.</summary>
    private static string ValidatorPath(string part) => part + ".validator";

    private static bool IsTransient(Exception e, CancellationToken cancellationToken) => e switch
    {
        OperationCanceledException => !cancellationToken.IsCancellationRequested, // HttpClient.Timeout
        HttpRequestException { StatusCode: { } status } => (int)status >= 500 || status is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests,
        HttpRequestException => true,
        InvalidDataException => false,
        IOException => true,
        _ => false,
    };

    private static string Describe(Exception e) => FindSocketError(e) is null ? e.Message : $"{e.Message} (offline?)";

    /// <summary>A host name that does not resolve means offline or a wrong --base-url: retrying only delays the message.</summary>
    private static bool IsHostNotFound(Exception e) => FindSocketError(e) is SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain;

    private static SocketError? FindSocketError(Exception e)
    {
        for (var inner = e; inner is not null; inner = inner.InnerException)
            if (inner is SocketException socket) return socket.SocketErrorCode;
        return null;
    }
}
