using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

/// <summary>
/// A file server on 127.0.0.1 for downloader tests (no internet): serves <see cref="Files"/> by path,
/// honours "Range: bytes=N-" with 206/416, answers 404 for unknown paths, and can drop the connection
/// after a number of bytes on the first request of a path.
/// </summary>
internal sealed class LocalHttpServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Task _loop;

    public LocalHttpServer()
    {
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort();
            BaseUrl = $"http://127.0.0.1:{port}/";
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add(BaseUrl);
            try { _listener.Start(); break; }
            catch (HttpListenerException) when (attempt < 5) { }
        }
        _loop = Task.Run(LoopAsync);
    }

    public string BaseUrl { get; private set; }

    /// <summary>Path (e.g. "/models/124M/vocab.bpe") → contents.</summary>
    public ConcurrentDictionary<string, byte[]> Files { get; } = new();

    /// <summary>Path → bytes after which the first response for it is aborted.</summary>
    public ConcurrentDictionary<string, int> DropOnceAfter { get; } = new();

    /// <summary>Answer 200 with the whole file even to Range requests (servers may).</summary>
    public bool IgnoreRange { get; set; }

    /// <summary>The ETag sent with every file (null: none); a request whose If-Range differs gets the whole file.</summary>
    public string? ETag { get; set; } = "\"v1\"";

    /// <summary>Paths answered without Content-Length with this many bytes repeating the file (a server that never stops).</summary>
    public ConcurrentDictionary<string, long> Endless { get; } = new();

    /// <summary>Paths whose range requests are all answered 416 with the requested start as the length (a lying server).</summary>
    public ConcurrentDictionary<string, bool> Lying416 { get; } = new();

    /// <summary>Every request: path and its Range header (null when none).</summary>
    public ConcurrentQueue<(string Path, string? Range)> Requests { get; } = new();

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception) { return; }
            _ = Task.Run(() => Serve(context));
        }
    }

    private void Serve(HttpListenerContext context)
    {
        var response = context.Response;
        try
        {
            string path = context.Request.Url!.AbsolutePath;
            string? range = context.Request.Headers["Range"];
            Requests.Enqueue((path, range));
            if (!Files.TryGetValue(path, out var content))
            {
                response.StatusCode = 404;
                response.Close();
                return;
            }
            if (ETag is not null) response.Headers["ETag"] = ETag;
            if (Endless.TryGetValue(path, out long endless))
            {
                response.SendChunked = true;
                for (long sent = 0; sent < endless; sent += content.Length) response.OutputStream.Write(content);
                response.Close();
                return;
            }
            if (range is not null && Lying416.ContainsKey(path))
            {
                response.StatusCode = 416;
                response.Headers["Content-Range"] = $"bytes */{range[6..^1]}";
                response.Close();
                return;
            }
            string? ifRange = context.Request.Headers["If-Range"];
            if (ifRange is not null && ifRange != ETag) range = null; // changed file: the whole of it
            long start = 0;
            if (range is not null && !IgnoreRange && range.StartsWith("bytes=") && range.EndsWith('-'))
            {
                start = long.Parse(range[6..^1]);
                if (start >= content.Length)
                {
                    response.StatusCode = 416;
                    response.Headers["Content-Range"] = $"bytes */{content.Length}";
                    response.Close();
                    return;
                }
                response.StatusCode = 206;
                response.Headers["Content-Range"] = $"bytes {start}-{content.Length - 1}/{content.Length}";
            }
            response.ContentLength64 = content.Length - start;
            if (DropOnceAfter.TryRemove(path, out int dropAfter))
            {
                response.OutputStream.Write(content, (int)start, dropAfter);
                response.OutputStream.Flush();
                response.Abort();
                return;
            }
            response.OutputStream.Write(content, (int)start, (int)(content.Length - start));
            response.Close();
        }
        catch (Exception)
        {
            response.Abort();
        }
    }

    private static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _listener.Stop();
        _listener.Close();
        try { _loop.Wait(TimeSpan.FromSeconds(2)); } catch (AggregateException) { }
    }
}
